"""The agent runtime against a real WebSocket peer on loopback (tests/unit/worker/fake_api.py)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from protocol.errors import ErrorCode
from protocol.messages import TaskCancel, TaskError, TaskResult
from tests.unit.worker.fake_api import WAIT_S, FakeApi
from worker import Agent, AuthenticationError, Registry, TaskContext
from worker.settings import Secret, WorkerSettings


class Point(msgspec.Struct, forbid_unknown_fields=True):
    x: int


def make_settings(api: FakeApi, **overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "url": api.url,
        "agent_id": api.agent_id,
        "agent_token": Secret(api.token),
        "concurrency": 4,
        "backoff_base_s": 0.02,
        "backoff_max_s": 0.1,
        "resend_interval_s": 30.0,
        "drain_timeout_s": 5.0,
        "shutdown_ack_timeout_s": 2.0,
    }
    values.update(overrides)
    return WorkerSettings(**values)


@contextlib.asynccontextmanager
async def running(agent: Agent[Any]) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(agent.run())
    try:
        yield task
    finally:
        agent.stop()
        agent.stop()  # the second stop skips the drain waits
        await asyncio.wait_for(task, WAIT_S)


class Gate:
    """Handlers block on it until the test opens it; counts runs and peak concurrency."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.active = 0
        self.peak = 0
        self.runs: list[tuple[str, int]] = []
        self.cancelled: list[str] = []
        self.changed = asyncio.Condition()

    async def enter(self, ctx: TaskContext[Any]) -> None:
        async with self.changed:
            self.runs.append((ctx.task_id, ctx.attempt))
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.changed.notify_all()
        try:
            await self.opened.wait()
        except asyncio.CancelledError:
            self.cancelled.append(ctx.task_id)
            raise
        finally:
            async with self.changed:
                self.active -= 1
                self.changed.notify_all()

    async def wait_active(self, n: int) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: self.active >= n), WAIT_S)


def gated_registry(gate: Gate) -> Registry[Any]:
    registry: Registry[Any] = Registry()

    @registry.handler("gated")
    async def gated(input: dict[str, Any], ctx: TaskContext[Any]) -> dict[str, Any]:
        await ctx.progress({"step": 1}, message="started")
        await gate.enter(ctx)
        await ctx.progress({"step": 2})
        return {"echo": input}

    @registry.handler("long")
    async def long(input: Any, ctx: TaskContext[Any]) -> None:
        await asyncio.sleep(3600)

    @registry.handler("noop")
    async def noop(input: Any, ctx: TaskContext[Any]) -> dict[str, Any]:
        return {}

    return registry


async def test_agent_authenticates_with_bearer_header_and_heartbeats() -> None:
    async with FakeApi() as api:
        agent = Agent(make_settings(api, concurrency=7), Registry[Any]())
        async with running(agent):
            await api.wait_for(lambda: len(api.heartbeats()) >= 3)
        handshake = api.handshakes[0]
        assert handshake.headers["Authorization"] == f"Bearer {api.token}"
        assert handshake.query["role"] == ["agent"]
        assert handshake.query["agent_id"] == [api.agent_id]
        assert "agent_token" not in handshake.query
        beat = api.heartbeats()[0]
        assert (beat.running, beat.capacity, beat.draining, beat.running_tasks) == (0, 7, False, [])
        assert not any(r.binary for r in api.received)  # every frame goes out as a text frame


async def test_token_in_query_flag_sends_agent_token_parameter() -> None:
    async with FakeApi() as api:
        agent = Agent(make_settings(api, token_in_query=True), Registry[Any]())
        async with running(agent):
            await api.wait_for(lambda: len(api.heartbeats()) >= 1)
        handshake = api.handshakes[0]
        assert handshake.query["agent_token"] == [api.token]
        assert "Authorization" not in handshake.headers


@pytest.mark.parametrize("refuse_with_http", [False, True], ids=["auth-error-frame", "http-401"])
async def test_bad_credentials_stop_the_agent_without_retrying(refuse_with_http: bool) -> None:
    async with FakeApi(refuse_with_http=refuse_with_http) as api:
        agent = Agent(make_settings(api, agent_token=Secret("wrong")), Registry[Any]())
        with pytest.raises(AuthenticationError):
            await asyncio.wait_for(agent.run(), WAIT_S)
        assert len(api.handshakes) == 1


async def test_duplicate_submit_runs_once_and_reports_accept_progress_result_in_order() -> None:
    gate = Gate()
    async with FakeApi() as api:
        agent = Agent(make_settings(api), gated_registry(gate))
        async with running(agent):
            await api.submit("t1", "gated", {"x": 1})
            await api.submit("t1", "gated", {"x": 1})  # redelivered: same task, same attempt
            await gate.wait_active(1)
            gate.opened.set()
            await api.wait_for(lambda: bool(api.frames("task/result", "t1")))
            await api.submit("t1", "gated", {"x": 1})  # a late redelivery after the result
            await api.submit("t2", "noop")
            await api.wait_for(lambda: bool(api.frames("task/result", "t2")))
        assert gate.runs == [("t1", 1)]
        assert api.task_types("t1") == ["task/accept", "task/progress", "task/progress", "task/result"]
        result = api.frames("task/result", "t1")[0].frame.payload
        assert isinstance(result, TaskResult)
        assert result.output == {"echo": {"x": 1}}
        progress = [r.frame.payload for r in api.frames("task/progress", "t1")]
        assert [msgspec.to_builtins(p)["data"] for p in progress] == [{"step": 1}, {"step": 2}]


async def test_heartbeat_reports_running_tasks() -> None:
    gate = Gate()
    async with FakeApi() as api:
        agent = Agent(make_settings(api, concurrency=3), gated_registry(gate))
        async with running(agent):
            await api.submit("t1", "gated", attempt=2)
            await gate.wait_active(1)
            await api.wait_for(lambda: any(b.running == 1 for b in api.heartbeats()))
            beat = next(b for b in api.heartbeats() if b.running == 1)
            assert beat.capacity == 2
            assert beat.running_tasks is not None
            assert [(r.task_id, r.attempt) for r in beat.running_tasks] == [("t1", 2)]
            gate.opened.set()


async def test_unacked_result_is_resent_after_reconnect_with_the_same_frame_id() -> None:
    async with FakeApi(auto_ack=False) as api:
        runs = 0
        registry: Registry[Any] = Registry()

        @registry.handler("once")
        async def once(input: Any, ctx: TaskContext[Any]) -> dict[str, int]:
            nonlocal runs
            runs += 1
            return {"runs": runs}

        agent = Agent(make_settings(api), registry)
        async with running(agent):
            await api.submit("t1", "once")
            await api.wait_for(lambda: bool(api.frames("task/result", "t1")))
            first = api.frames("task/result", "t1")[0]
            await api.drop()
            await api.wait_for(lambda: any(r.conn == 2 for r in api.frames("task/result", "t1")))
            again = next(r for r in api.frames("task/result", "t1") if r.conn == 2)
            assert again.frame.id == first.frame.id
            await api.ack(again)
            await api.wait_for(lambda: len(api.heartbeats()) >= 1)  # still connected and alive
        assert runs == 1
        assert api.connections == 2


async def test_unacked_result_is_resent_on_a_live_connection() -> None:
    async with FakeApi(auto_ack=False) as api:
        agent = Agent(make_settings(api, resend_interval_s=0.05), gated_registry(Gate()))
        async with running(agent):
            await api.submit("t1", "noop")
            await api.wait_for(lambda: len(api.frames("task/result", "t1")) >= 3)
        copies = api.frames("task/result", "t1")
        assert {r.frame.id for r in copies} == {copies[0].frame.id}
        assert {r.conn for r in copies} == {1}


async def test_cancel_stops_the_running_handler_and_sends_no_result() -> None:
    gate = Gate()
    async with FakeApi() as api:
        agent = Agent(make_settings(api), gated_registry(gate))
        async with running(agent):
            await api.submit("t1", "gated")
            await gate.wait_active(1)
            await api.send(TaskCancel(task_id="t1", attempt=1, reason="canceled by user"))
            async with gate.changed:
                await asyncio.wait_for(gate.changed.wait_for(lambda: gate.active == 0), WAIT_S)
            await api.submit("t1", "gated")  # a redelivered submit of the cancelled attempt is not run
            await api.submit("t2", "noop")  # a barrier: frames leave in order
            await api.wait_for(lambda: bool(api.frames("task/result", "t2")))
        assert gate.cancelled == ["t1"]
        assert gate.runs == [("t1", 1)]
        assert api.task_types("t1") == ["task/accept", "task/progress"]


@pytest.mark.parametrize(
    "error", [ErrorCode.STALE_ATTEMPT, ErrorCode.NOT_ASSIGNED, ErrorCode.TASK_NOT_RUNNABLE, ErrorCode.NOT_FOUND]
)
async def test_fencing_error_frame_cancels_the_task_and_drops_its_frames(error: ErrorCode) -> None:
    gate = Gate()
    async with FakeApi(auto_ack=False) as api:
        agent = Agent(make_settings(api, resend_interval_s=0.05), gated_registry(gate))
        async with running(agent):
            await api.submit("t1", "gated")
            await gate.wait_active(1)
            await api.wait_for(lambda: bool(api.frames("task/accept", "t1")))
            await api.refuse(api.frames("task/accept", "t1")[0], error)
            async with gate.changed:
                await asyncio.wait_for(gate.changed.wait_for(lambda: gate.active == 0), WAIT_S)
            await api.submit("t2", "noop")
            await api.wait_for(lambda: bool(api.frames("task/result", "t2")))
            accepts_then = len(api.frames("task/accept", "t1"))
            # The resender runs every 25 ms; waiting for three more t2 copies covers several of its rounds.
            await api.wait_for(lambda: len(api.frames("task/result", "t2")) >= 4)
        assert gate.cancelled == ["t1"]
        assert not api.frames("task/result", "t1")
        assert not api.frames("task/error", "t1")
        assert len(api.frames("task/accept", "t1")) == accepts_then  # no resend after the refusal


async def test_concurrency_never_exceeds_the_limit() -> None:
    gate = Gate()
    async with FakeApi() as api:
        agent = Agent(make_settings(api, concurrency=3), gated_registry(gate))
        async with running(agent):
            for i in range(10):
                await api.submit(f"t{i}", "gated")
            await gate.wait_active(3)
            await api.wait_for(lambda: len(api.frames("task/accept")) >= 3)
            assert len(api.frames("task/accept")) == 3  # the others wait for a slot, unaccepted
            gate.opened.set()
            await api.wait_for(lambda: len(api.frames("task/result")) == 10)
        assert gate.peak == 3
        assert agent.running == 0
        # Seen from the server: accepted-but-unfinished never passes the limit either.
        in_flight = peak = 0
        for r in api.received:
            if r.frame.type == "task/accept":
                in_flight += 1
            elif r.frame.type == "task/result":
                in_flight -= 1
            peak = max(peak, in_flight)
        assert peak <= 3


async def test_handler_failures_become_task_errors() -> None:
    registry: Registry[Any] = Registry()

    @registry.handler("typed")
    async def typed(input: Point, ctx: TaskContext[Any]) -> dict[str, int]:
        return {"x": input.x}

    @registry.handler("boom")
    async def boom(input: Any, ctx: TaskContext[Any]) -> None:
        raise ValueError("it broke")

    async with FakeApi() as api:
        agent = Agent(make_settings(api), registry)
        async with running(agent):
            await api.submit("bad-input", "typed", {"x": "not a number"})
            await api.submit("good-input", "typed", {"x": 3})
            await api.submit("raises", "boom")
            await api.submit("unknown", "no.such.type")
            await api.wait_for(lambda: len(api.frames("task/error")) == 3 and len(api.frames("task/result")) == 1)
        errors = {
            r.frame.payload.task_id: r.frame.payload
            for r in api.frames("task/error")
            if isinstance(r.frame.payload, TaskError)
        }
        assert (errors["bad-input"].error, errors["bad-input"].retryable) == ("validation_error", False)
        assert (errors["raises"].error, errors["raises"].retryable) == ("ValueError", True)
        assert "it broke" in errors["raises"].message
        assert errors["unknown"].error == "unsupported_type"


async def test_sync_handler_runs_in_a_thread_and_heartbeats_continue() -> None:
    release = threading.Event()
    registry: Registry[Any] = Registry()

    @registry.handler("blocking")
    def blocking(input: Any, ctx: TaskContext[Any]) -> dict[str, bool]:
        ctx.progress_nowait(message="in thread")
        released = release.wait(WAIT_S)  # blocks this thread, not the event loop
        return {"released": released}

    async with FakeApi() as api:
        agent = Agent(make_settings(api), registry)
        async with running(agent):
            await api.submit("t1", "blocking")
            await api.wait_for(lambda: bool(api.frames("task/progress", "t1")))
            seen = len(api.heartbeats())
            await api.wait_for(lambda: sum(1 for b in api.heartbeats()[seen:] if b.running == 1) >= 3)
            release.set()
            await api.wait_for(lambda: bool(api.frames("task/result", "t1")))
        result = api.frames("task/result", "t1")[0].frame.payload
        assert isinstance(result, TaskResult)
        assert result.output == {"released": True}


async def test_stop_drains_finishes_short_tasks_and_hands_back_long_ones() -> None:
    gate = Gate()
    async with FakeApi() as api:
        agent = Agent(make_settings(api, concurrency=5, drain_timeout_s=0.3), gated_registry(gate))
        run = asyncio.create_task(agent.run())
        await api.submit("short", "gated")
        await api.submit("long-1", "long")
        await api.submit("long-2", "long")
        await gate.wait_active(1)
        await api.wait_for(lambda: len(api.frames("task/accept")) == 3)
        agent.stop()
        await api.wait_for(lambda: any(b.draining for b in api.heartbeats()))
        await api.submit("late", "noop")  # not accepted while draining: handed back at once
        await api.wait_for(lambda: bool(api.frames("task/error", "late")))
        gate.opened.set()
        await asyncio.wait_for(run, WAIT_S)

        assert api.task_types("short")[-1] == "task/result"
        assert api.task_types("late") == ["task/error"]
        for task_id in ("long-1", "long-2", "late"):
            error = api.frames("task/error", task_id)[0].frame.payload
            assert isinstance(error, TaskError)
            assert (error.error, error.retryable) == ("worker_shutdown", True)
        # Heartbeats went on during the drain, reporting draining with the long tasks still running ...
        assert any(b.draining and b.running == 2 and b.capacity == 0 for b in api.heartbeats())
        # ... and the last handback came before the agent stopped heartbeating.
        last_handback = max(i for i, r in enumerate(api.received) if r.frame.type == "task/error")
        assert any(r.frame.type == "heartbeat" for r in api.received[: last_handback + 1])


async def test_refused_result_is_reported_as_a_non_retryable_error() -> None:
    async with FakeApi(auto_ack=False) as api:
        agent = Agent(make_settings(api), gated_registry(Gate()))
        async with running(agent):
            await api.submit("t1", "noop")
            await api.wait_for(lambda: bool(api.frames("task/result", "t1")))
            await api.refuse(api.frames("task/result", "t1")[0], ErrorCode.VALIDATION_ERROR)
            await api.wait_for(lambda: bool(api.frames("task/error", "t1")))
        error = api.frames("task/error", "t1")[0].frame.payload
        assert isinstance(error, TaskError)
        assert (error.error, error.retryable) == ("validation_error", False)


async def test_progress_refused_by_the_server_does_not_stop_the_task() -> None:
    gate = Gate()
    async with FakeApi() as api:
        agent = Agent(make_settings(api), gated_registry(gate))
        async with running(agent):
            await api.submit("t1", "gated")
            await api.wait_for(lambda: bool(api.frames("task/progress", "t1")))
            await api.refuse(api.frames("task/progress", "t1")[0], ErrorCode.PAYLOAD_TOO_LARGE)
            await api.submit("t2", "noop")  # a barrier: the refusal was read before t2's result
            await api.wait_for(lambda: bool(api.frames("task/result", "t2")))
            gate.opened.set()
            await api.wait_for(lambda: bool(api.frames("task/result", "t1")))
        assert gate.cancelled == []


async def test_short_disconnect_keeps_running_tasks_and_delivers_their_result_once() -> None:
    gate = Gate()
    async with FakeApi() as api:
        agent = Agent(make_settings(api), gated_registry(gate))
        async with running(agent):
            await api.submit("t1", "gated")
            await gate.wait_active(1)
            await api.wait_for(lambda: bool(api.frames("task/accept", "t1")))
            await api.drop()
            await api.wait_for(lambda: api.connections == 2)
            await api.submit("t1", "gated")  # the new session redelivers the inbox entry: still one run
            gate.opened.set()
            await api.wait_for(lambda: bool(api.frames("task/result", "t1")))
            await api.submit("t2", "noop")
            await api.wait_for(lambda: bool(api.frames("task/result", "t2")))
        assert gate.runs == [("t1", 1)]
        assert [r.conn for r in api.frames("task/result", "t1")] == [2]
        assert len(api.frames("task/accept", "t1")) == 1  # acked on the first connection: not resent


async def test_progress_is_dropped_under_backpressure_and_the_task_still_finishes() -> None:
    registry: Registry[Any] = Registry()
    outcomes: list[bool] = []

    @registry.handler("flood")
    async def flood(input: Any, ctx: TaskContext[Any]) -> dict[str, int]:
        for i in range(2000):  # never yields to the loop: the writer cannot keep up
            outcomes.append(await ctx.progress({"i": i}))
        return {"sent": sum(outcomes)}

    async with FakeApi() as api:
        agent = Agent(make_settings(api, progress_backlog=16), registry)
        async with running(agent):
            await api.submit("t1", "flood")
            await api.wait_for(lambda: bool(api.frames("task/result", "t1")))
        assert 0 < sum(outcomes) < 2000
        assert len(api.frames("task/progress", "t1")) == sum(outcomes)
        assert api.task_types("t1")[-1] == "task/result"


async def test_handlers_get_the_resources_the_lifespan_yields() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def resources() -> AsyncIterator[dict[str, str]]:
        events.append("enter")
        yield {"model": "offline"}
        events.append("exit")

    registry: Registry[dict[str, str]] = Registry()

    @registry.handler("model")
    async def model(input: Any, ctx: TaskContext[dict[str, str]]) -> str:
        return ctx.resources["model"]

    async with FakeApi() as api:
        agent = Agent(make_settings(api), registry, resources=resources)
        async with running(agent):
            await api.submit("t1", "model")
            await api.wait_for(lambda: bool(api.frames("task/result", "t1")))
        result = api.frames("task/result", "t1")[0].frame.payload
        assert isinstance(result, TaskResult)
        assert result.output == "offline"
        assert events == ["enter", "exit"]
