"""taskyard worker SDK: run an agent that takes tasks over WebSocket and runs your handlers.

Depends on `protocol` and `websockets` only (never redis, sqlalchemy or litestar), so anyone's Python agent
can use it::

    registry: Registry[None] = Registry()

    @registry.handler("greet")
    async def greet(input: GreetInput, ctx: TaskContext[None]) -> dict[str, str]:
        await ctx.progress(message="greeting")
        return {"text": f"hello {input.name}"}

    await Agent(load_settings(os.environ), registry).run()
"""

from __future__ import annotations

from worker.agent import Agent
from worker.context import TaskContext
from worker.errors import AuthenticationError, Fatal, Retry, WorkerError, WorkerSettingsError
from worker.registry import HandlerSpec, Registry
from worker.settings import WorkerSettings, load_settings
from worker.testing import RecordedRun, run_handler

__all__ = (
    "Agent",
    "AuthenticationError",
    "Fatal",
    "HandlerSpec",
    "RecordedRun",
    "Registry",
    "Retry",
    "TaskContext",
    "WorkerError",
    "WorkerSettings",
    "WorkerSettingsError",
    "load_settings",
    "run_handler",
)
