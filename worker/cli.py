"""`python -m worker`: flags -> settings -> registry -> Agent, signal handling and exit codes.

Exit codes: 0 after a clean stop (drained), 1 when `--check` fails, 2 for bad configuration or credentials
the server refuses (retrying them cannot help, so a supervisor should not loop on it), 3 when the watchdog
found the link hung (`worker.agent.EXIT_HUNG`: restart it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from worker.agent import Agent
from worker.builtins import builtin_registry
from worker.connection import ConnectParams, open_connection
from worker.errors import AuthenticationError, ConnectionLostError, RegistryError, WorkerSettingsError
from worker.llm import LlmService, llm_registry
from worker.registry import Registry, load_registry
from worker.runtime import run as run_loop
from worker.settings import env_name, load_settings

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from worker.settings import WorkerSettings

__all__ = ("EXIT_CHECK_FAILED", "EXIT_CONFIG", "EXIT_OK", "build_registry", "main")

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_CONFIG = 2
"""Bad settings, unloadable handlers, or credentials the server refused."""

_LOG_FIELDS = ("agent_id", "task_id", "attempt", "task_type", "session_id", "error", "ref")


class _FieldsFormatter(logging.Formatter):
    """Human-readable lines with the structured fields (task_id, attempt, ...) appended as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [f"{name}={record.__dict__[name]}" for name in _LOG_FIELDS if name in record.__dict__]
        return f"{line} {' '.join(fields)}" if fields else line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=os.environ.get("TASKYARD_PROG", "python -m worker"),
        description="Run one taskyard agent: connect to the API over WebSocket and run tasks. "
        "Every flag overrides its TASKYARD_WORKER_* environment variable.",
    )
    parser.add_argument("--url", help=f"WebSocket endpoint ({env_name('url')})")
    parser.add_argument("--agent-id", help=f"agent id ({env_name('agent_id')})")
    parser.add_argument(
        "--agent-token", help=f"agent token ({env_name('agent_token')}; prefer the variable: flags show in ps)"
    )
    parser.add_argument(
        "--concurrency", help=f"local cap on tasks at once ({env_name('concurrency')}; default: the server's record)"
    )
    parser.add_argument(
        "--drain-timeout-s", help=f"grace period on SIGTERM ({env_name('drain_timeout_s')}, default 30)"
    )
    parser.add_argument(
        "--handlers",
        action="append",
        metavar="MODULE:ATTR",
        help=f"extra handler registry, repeatable ({env_name('handlers')}, comma-separated)",
    )
    parser.add_argument(
        "--enable-crash-handler",
        action="store_true",
        default=None,
        help="register the `crash` task type (os._exit(1)), for fault tests only",
    )
    parser.add_argument("--no-builtins", action="store_true", default=None, help="do not register noop/echo/...")
    parser.add_argument(
        "--token-in-query", action="store_true", default=None, help="send the token as ?agent_token= (not a header)"
    )
    parser.add_argument("--log-level", help=f"DEBUG, INFO, WARNING, ERROR ({env_name('log_level')})")
    parser.add_argument(
        "--check",
        action="store_true",
        help="connect and authenticate once, then exit 0 (ok) or 1 (not ok): a probe for supervisors",
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    """Flags given on the command line, as the environment variables they stand for."""
    env: dict[str, str] = {}
    for field in ("url", "agent_id", "agent_token", "concurrency", "drain_timeout_s", "log_level"):
        value = getattr(args, field)
        if value is not None:
            env[env_name(field)] = value
    if args.handlers:
        env[env_name("handlers")] = ",".join(args.handlers)
    if args.enable_crash_handler:
        env[env_name("enable_crash_handler")] = "1"
    if args.no_builtins:
        env[env_name("builtins")] = "0"
    if args.token_in_query:
        env[env_name("token_in_query")] = "1"
    return env


def build_registry(settings: WorkerSettings, llm: LlmService | None = None) -> Registry[Any]:
    """The built-in handlers (unless disabled; the LLM ones when `llm` is given) plus every `module:attr`
    registry the settings name.

    Raises:
        RegistryError: a registry cannot be loaded, or two register the same type.
    """
    registry: Registry[Any] = Registry()
    if settings.builtins:
        registry.include(builtin_registry(enable_crash=settings.enable_crash_handler))
        if llm is not None:
            registry.include(llm_registry(llm))
    for ref in settings.handlers:
        registry.include(load_registry(ref))
    return registry


async def _check(settings: WorkerSettings) -> int:
    params = ConnectParams(
        url=settings.url,
        agent_id=settings.agent_id,
        agent_token=settings.agent_token,
        token_in_query=settings.token_in_query,
        open_timeout_s=settings.open_timeout_s,
        use_env_proxy=settings.use_env_proxy,
    )
    try:
        conn = await open_connection(params)
    except (AuthenticationError, ConnectionLostError) as exc:
        logger.error("check failed: %s", exc)
        return EXIT_CHECK_FAILED
    await conn.close()
    logger.info("check ok: authenticated as agent %s", settings.agent_id)
    return EXIT_OK


async def _serve(agent: Agent[Any], llm: LlmService | None) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, agent.stop)
    try:
        await agent.run()
    finally:
        if llm is not None:
            await llm.aclose()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the worker; returns the process exit code."""
    args = _parser().parse_args(argv)
    merged = {**(os.environ if environ is None else environ), **_overrides(args)}
    try:
        settings = load_settings(merged)
    except WorkerSettingsError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    handler = logging.StreamHandler()
    handler.setFormatter(_FieldsFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=settings.log_level, handlers=[handler])
    if args.check:
        return asyncio.run(_check(settings))
    llm = LlmService.from_settings(settings) if settings.builtins else None
    try:
        registry = build_registry(settings, llm)
    except RegistryError as exc:
        logger.error("cannot load handlers: %s", exc)
        return EXIT_CONFIG
    logger.info(
        "worker starting: agent %s, types %s, llm provider %s",
        settings.agent_id,
        ", ".join(registry.types),
        settings.llm_base_url,
    )
    try:
        run_loop(_serve(Agent(settings, registry), llm))
    except AuthenticationError as exc:
        logger.error("stopping: the server refused the agent's credentials (%s): %s", exc.error, exc.message)
        return EXIT_CONFIG
    logger.info("worker stopped")
    return EXIT_OK
