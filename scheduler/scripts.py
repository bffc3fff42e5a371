"""Typed wrappers around the Lua scripts in `scheduler/lua/`, one per script.

Callers never see KEYS/ARGV lists or byte replies. Each script is `_lib.lua` + its own file,
registered once per client (redis-py's script object handles NOSCRIPT).
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from scheduler.errors import ScriptReplyError
from scheduler.keys import route_id
from scheduler.types import Applied, CancelResult, Outcome, ReconcileResult, SweepResult

if TYPE_CHECKING:
    from collections.abc import Sequence

    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline
    from redis.commands.core import AsyncScript

    from scheduler.keys import Keys
    from scheduler.settings import SchedulerSettings
    from scheduler.types import AgentSpec, TaskSpec

__all__ = ("PROGRESS_MARK_EVERY", "SCRIPT_NAMES", "Scripts", "as_str", "dispatch_reply")

SCRIPT_NAMES = (
    "enqueue",
    "dispatch",
    "accept",
    "progress",
    "stream",
    "complete",
    "fail",
    "cancel",
    "heartbeat",
    "agent_offline",
    "reconcile_agent",
    "reap_agents",
    "timeouts",
    "release_due",
)


PROGRESS_MARK_EVERY = 1024
"""Progress reaches the global events stream (the recorder) only when its seq is a multiple of this (`_lib.lua`
PROGRESS_MARK): the recorder keeps no progress and only moves the row's `seq`, so a task's row lags its events by
fewer than this many progress events (plus what the recorder has not applied yet); a rebuild numbers on above it."""

MAX_DISPATCH_PER_CALL = 1000
"""Bounds one dispatch call's argument lists inside the script (Lua's unpack)."""


@cache
def script_source(name: str) -> str:
    """The full source of one script: the shared library, then the script itself."""
    folder = resources.files("scheduler") / "lua"
    return (folder / "_lib.lua").read_text() + "\n" + (folder / f"{name}.lua").read_text()


def as_str(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _opt_int(value: Any) -> int | None:
    text = as_str(value) if value is not None else ""
    return int(text) if text else None


def _applied(reply: Any) -> Applied:
    if not isinstance(reply, list) or len(reply) != 3:
        raise ScriptReplyError(f"unexpected frame reply {reply!r}")
    status = as_str(reply[2])
    outcome = Outcome(as_str(reply[0]))
    if outcome in (Outcome.STREAM_GAP, Outcome.BAD_OFFSET):
        return Applied(outcome, None, status or None, expected_offset=_opt_int(reply[1]))
    return Applied(outcome, _opt_int(reply[1]), status or None)


def dispatch_reply(reply: Any) -> tuple[int, str, dict[str, int]]:
    """dispatch.lua's reply: (placed, why it stopped, tasks placed per agent)."""
    placed = {as_str(reply[i]): int(reply[i + 1]) for i in range(2, len(reply) - 1, 2)}
    return int(reply[0]), as_str(reply[1]), placed


def _progress_applied(outcome: Any, seq: Any, status: Any) -> Applied:
    """`_applied` for one progress frame, with the common case (recorded) first: it runs once per event."""
    if outcome == b"ok":
        return Applied(Outcome.OK, int(seq), as_str(status) or None)
    return _applied([outcome, seq, status])


class Scripts:
    """Every script bound to one Redis client, one key prefix and the settings' bounds."""

    def __init__(self, redis: Redis, keys: Keys, settings: SchedulerSettings) -> None:
        self._keys = keys
        self._settings = settings
        self._scripts: dict[str, AsyncScript] = {n: redis.register_script(script_source(n)) for n in SCRIPT_NAMES}
        self._common_keys = [
            keys.events(),
            keys.wake(),
            keys.queues(),
            keys.routes(),
            keys.delayed(),
            keys.deadlines(),
            keys.agents(),
        ]
        self._rng = random.Random()

    def _common_args(self, now_ms: int | str) -> list[str | int]:
        s = self._settings
        return [
            self._keys.prefix,
            now_ms,
            s.history_maxlen,
            s.events_maxlen,
            s.task_ttl_s,
            s.inbox_maxlen,
            s.inbox_ttl_s,
        ]

    async def _run(
        self, name: str, now_ms: int, keys: list[str], args: list[Any], client: Pipeline | None = None
    ) -> Any:
        return await self._scripts[name](
            keys=[*self._common_keys, *keys], args=[*self._common_args(now_ms), *args], client=client
        )

    def _backoff_args(self) -> list[Any]:
        s = self._settings
        return [int(s.retry_base_s * 1000), int(s.retry_max_s * 1000), repr(self._rng.random())]

    # --- tasks -------------------------------------------------------------------------------

    @staticmethod
    def _enqueue_args(spec: TaskSpec) -> list[Any]:
        caps = sorted(set(spec.capabilities))
        route = route_id(spec.agent_id, spec.capabilities)
        run_at = spec.run_at_ms
        return [
            spec.task_id,
            spec.owner_id,
            spec.type,
            spec.input_json,
            spec.priority,
            spec.agent_id or "",
            json.dumps(caps),
            route,
            spec.timeout_s,
            spec.max_attempts,
            "" if run_at is None else run_at,
            spec.attempt,
            spec.seq,
            spec.status,
        ]

    async def enqueue(self, specs: Sequence[TaskSpec], now_ms: int) -> int:
        """Stores and queues the tasks in one call; returns how many were new."""
        args = [a for spec in specs for a in self._enqueue_args(spec)]
        return int(await self._run("enqueue", now_ms, [self._keys.ord_counter()], args))

    async def dispatch(
        self,
        route: str,
        route_info: str,
        candidates: list[str],
        now_ms: int,
        *,
        max_tasks: int,
        stop_score: float | None,
    ) -> tuple[int, str, dict[str, int]]:
        """Places heads of one queue; returns (placed, why it stopped, tasks placed per agent).

        `route_info` is the route's JSON as the registry's routes hash holds it; `candidates` least loaded first."""
        args: list[Any] = [
            route,
            min(max_tasks, MAX_DISPATCH_PER_CALL),
            int(self._settings.assign_timeout_s * 1000),
            "" if stop_score is None else repr(stop_score),
            route_info,
            *candidates,
        ]
        return dispatch_reply(await self._run("dispatch", now_ms, [self._keys.queue(route)], args))

    def queue_dispatch_head(
        self, pipe: Pipeline, candidates: list[str], presence_version: str, now_ms: int | None, *, max_tasks: int
    ) -> None:
        """Adds to `pipe` a dispatch of the registry's first queue (dispatch.lua's head mode); `dispatch_reply`
        reads what it returns. `now_ms` None: the script takes the server's time when it runs.

        Sent as a bare EVALSHA: a script object in a pipeline costs a SCRIPT EXISTS round trip per execute. The
        caller has run the script once through `dispatch` (which loads it); a NOSCRIPT reply (a flushed or new
        server) means an ordinary pass, which loads it again."""
        args: list[Any] = [
            *self._common_args("" if now_ms is None else now_ms),
            "",
            min(max_tasks, MAX_DISPATCH_PER_CALL),
            int(self._settings.assign_timeout_s * 1000),
            presence_version,
            "",
            *candidates,
        ]
        keys = [*self._common_keys, self._keys.queues()]  # KEYS[8] is unused in head mode
        pipe.evalsha(self._scripts["dispatch"].sha, len(keys), *keys, *args)

    async def cancel(self, task_id: str, reason: str, now_ms: int) -> CancelResult:
        reply = await self._run("cancel", now_ms, [self._keys.task(task_id)], [task_id, reason])
        outcome = as_str(reply[0])
        if outcome not in ("canceled", "not_found", "terminal"):
            raise ScriptReplyError(f"unexpected cancel reply {reply!r}")
        agent = as_str(reply[2])
        return CancelResult(outcome, _opt_int(reply[1]), agent or None, _opt_int(reply[3]))  # type: ignore[arg-type]

    # --- agent frames --------------------------------------------------------------------------

    def _frame(self, task_id: str, attempt: int, agent_id: str) -> tuple[list[str], list[Any]]:
        return [self._keys.task(task_id)], [task_id, str(attempt), agent_id]

    async def accept(self, task_id: str, attempt: int, agent_id: str, now_ms: int, inbox_entry: str = "") -> Applied:
        """`inbox_entry`: the attempt's submit entry in the agent's inbox, acked in the same call."""
        keys, args = self._frame(task_id, attempt, agent_id)
        return _applied(await self._run("accept", now_ms, keys, [*args, inbox_entry]))

    async def progress(self, frames: Sequence[tuple[str, int, str, bytes]], now_ms: int) -> list[Applied]:
        """Several (task id, attempt, agent id, TaskProgress JSON without seq) in one call; one `Applied` each."""
        # One argument for all frames (progress.lua parses it): redis-py packs each argument in Python, at
        # several microseconds apiece once a command is long, which was most of this call's cost per frame.
        packed = b"".join(
            b"%s %d %s %d\n%s" % (task_id.encode(), attempt, agent_id.encode(), len(payload), payload)
            for task_id, attempt, agent_id, payload in frames
        )
        reply = await self._run("progress", now_ms, [], [packed])
        if not isinstance(reply, list) or len(reply) != 3 * len(frames):
            raise ScriptReplyError(f"unexpected progress reply {reply!r}")
        return [_progress_applied(reply[i], reply[i + 1], reply[i + 2]) for i in range(0, len(reply), 3)]

    async def stream(
        self, task_id: str, attempt: int, agent_id: str, now_ms: int, *, offset: int, delta: str
    ) -> Applied:
        keys, args = self._frame(task_id, attempt, agent_id)
        return _applied(await self._run("stream", now_ms, keys, [*args, offset, delta.encode()]))

    async def complete(self, results: Sequence[tuple[str, int, str, bytes | None, str]], now_ms: int) -> list[Applied]:
        """Several (task id, attempt, agent id, output JSON or None, inbox entry id or '') results in one call;
        one `Applied` each. A submit's inbox entry given is acked by the same call.

        An output given is kept at `P:out:{id}` for `output_keep_s` (see `SchedulerClient.complete`).
        """
        args: list[Any] = [int(self._settings.output_keep_s * 1000)]
        for task_id, attempt, agent_id, output_json, inbox_entry in results:
            args += [task_id, str(attempt), agent_id, b"" if output_json is None else output_json, inbox_entry]
        reply = await self._run("complete", now_ms, [], args)
        if not isinstance(reply, list) or len(reply) != 5 * len(results):
            raise ScriptReplyError(f"unexpected complete reply {reply!r}")
        out = []
        for i in range(0, len(reply), 5):
            prior = tuple(e if isinstance(e, bytes) else str(e).encode() for e in reply[i + 3 : i + 5] if e)
            out.append(replace(_applied(reply[i : i + 3]), prior=prior))
        return out

    async def fail(
        self,
        task_id: str,
        attempt: int,
        agent_id: str,
        now_ms: int,
        *,
        error: str,
        message: str,
        retryable: bool,
        retry_delay_s: float | None,
        inbox_entry: str = "",
    ) -> Applied:
        keys, args = self._frame(task_id, attempt, agent_id)
        delay = "" if retry_delay_s is None else int(retry_delay_s * 1000)
        extra = [error, message, "1" if retryable else "0", delay, *self._backoff_args(), inbox_entry]
        return _applied(await self._run("fail", now_ms, keys, [*args, *extra]))

    # --- agents --------------------------------------------------------------------------------

    def _agent_keys(self, agent_id: str) -> list[str]:
        k = self._keys
        return [k.agent(agent_id), k.agent_tasks(agent_id), k.inbox(agent_id)]

    async def heartbeat(self, agent: AgentSpec, lease_ms: int, now_ms: int, session_id: str = "") -> bool:
        args: list[Any] = [
            agent.agent_id,
            agent.owner_id,
            json.dumps(sorted(set(agent.capabilities))),
            agent.concurrency,
            "1" if agent.accepting else "0",
            lease_ms,
            int(self._settings.agent_keep_s * 1000),
            session_id,
        ]
        return int(await self._run("heartbeat", now_ms, self._agent_keys(agent.agent_id), args)) == 1

    async def agent_offline(self, agent_id: str, requeue_now: bool, now_ms: int) -> int:
        args = [agent_id, "1" if requeue_now else "0", self._settings.max_losses]
        return int(await self._run("agent_offline", now_ms, self._agent_keys(agent_id), args))

    async def agent_closed(self, agent_id: str, session_id: str, grace_ms: int, now_ms: int) -> None:
        args = [agent_id, "grace", self._settings.max_losses, grace_ms, session_id]
        await self._run("agent_offline", now_ms, self._agent_keys(agent_id), args)

    async def reconcile_agent(self, agent_id: str, running: list[tuple[str, int]], now_ms: int) -> ReconcileResult:
        args: list[Any] = [agent_id, self._settings.max_losses]
        for task_id, attempt in running:
            args += [task_id, attempt]
        reply = await self._run("reconcile_agent", now_ms, self._agent_keys(agent_id)[:2], args)
        return ReconcileResult(requeued=int(reply[0]), failed=int(reply[1]), freed=int(reply[2]))

    # --- sweeps --------------------------------------------------------------------------------

    async def reap_agents(self, now_ms: int) -> SweepResult:
        reply = await self._run("reap_agents", now_ms, [], [self._settings.sweep_batch, self._settings.max_losses])
        return SweepResult(agents_reaped=int(reply[0]), tasks_requeued=int(reply[1]), tasks_failed=int(reply[2]))

    async def timeouts(self, now_ms: int) -> int:
        args = [self._settings.sweep_batch, *self._backoff_args(), self._settings.max_losses]
        return int(await self._run("timeouts", now_ms, [], args))

    async def release_due(self, now_ms: int) -> int:
        return int(await self._run("release_due", now_ms, [], [self._settings.sweep_batch]))
