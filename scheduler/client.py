"""`SchedulerClient`: everything the API asks of the Redis side, as typed async calls.

Every state change is one Lua script (see `scripts.py`); this module only composes them with
the stream and presence readers. Never talks to the database.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

import redis.exceptions

from scheduler import counts
from scheduler.clock import Clock, SystemClock
from scheduler.coalesce import Coalescer
from scheduler.keys import INBOX_GROUP, RECORDER_GROUP, Keys
from scheduler.presence import read_online
from scheduler.scripts import Scripts, as_str
from scheduler.settings import SchedulerSettings
from scheduler.streams import (
    claim_pending,
    events_of,
    parse_event,
    parse_inbox_entry,
    read_group,
    read_group_reply,
    status_event,
    stream_entries,
    stream_events,
)

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Iterable, Mapping, Sequence

    from redis.asyncio import Redis

    from scheduler.types import (
        AgentPresence,
        AgentSpec,
        Applied,
        CancelResult,
        InboxEntry,
        ReconcileResult,
        TaskEvent,
        TaskSpec,
    )

__all__ = ("SchedulerClient",)

ENQUEUE_CHUNK = 200


def _require_object(payload_json: bytes) -> None:
    """The progress script splices `seq` after the payload's opening brace: anything but an object is a bug."""
    if not payload_json.startswith(b"{"):
        raise ValueError("payload_json must be a JSON object")


class SchedulerClient:
    """The API's handle on queues, agent frames, presence, inboxes and events.

    `blocking_redis` serves blocking stream reads (give it `socket_timeout=None`); without it the
    command client is used, so keep `block_ms` below its socket timeout.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        clock: Clock | None = None,
        settings: SchedulerSettings | None = None,
        blocking_redis: Redis | None = None,
    ) -> None:
        self._redis = redis
        self._blocking = blocking_redis or redis
        self.settings = settings or SchedulerSettings(prefix=prefix)
        self.keys = Keys(prefix)
        self.clock: Clock = clock or SystemClock()
        self.scripts = Scripts(redis, self.keys, self.settings)
        self._completes: Coalescer[tuple[str, int, str, bytes | None, str], Applied] = Coalescer(
            lambda results: self.scripts.complete(results, self._now())
        )
        self._progress: Coalescer[tuple[str, int, str, bytes], Applied] = Coalescer(
            lambda frames: self.scripts.progress(frames, self._now())
        )

    def _now(self) -> int:
        return self.clock.now_ms()

    # --- tasks -------------------------------------------------------------------------------

    async def enqueue(self, spec: TaskSpec) -> bool:
        """Stores and queues a task; False when the task id is already known (idempotent)."""
        return await self.scripts.enqueue([spec], self._now()) == 1

    async def enqueue_many(self, specs: Iterable[TaskSpec]) -> int:
        """Enqueues in chunks of one script call each; returns how many were new."""
        added = 0
        batch = list(specs)
        for start in range(0, len(batch), ENQUEUE_CHUNK):
            added += await self.scripts.enqueue(batch[start : start + ENQUEUE_CHUNK], self._now())
        return added

    async def cancel(self, task_id: str, *, reason: str = "canceled") -> CancelResult:
        return await self.scripts.cancel(task_id, reason, self._now())

    async def queue_depths(self) -> dict[int, int]:
        """Queued tasks per priority (0..9), across every queue."""
        routes: list[Any] = await self._redis.zrange(self.keys.queues(), 0, -1)
        depths = dict.fromkeys(range(10), 0)
        if not routes:
            return depths
        pipe = self._redis.pipeline(transaction=False)
        for rid in routes:
            for prio in range(10):
                low = (9 - prio) * 10**14
                pipe.zcount(self.keys.queue(as_str(rid)), low, f"({low + 10**14}")
        counts = await pipe.execute()
        for i, count in enumerate(counts):
            depths[i % 10] += int(count)
        return depths

    # --- agent frames (fenced by task id, attempt, agent id) -----------------------------------

    async def accept(self, task_id: str, attempt: int, agent_id: str, *, inbox_entry: str = "") -> Applied:
        """`inbox_entry`: the id of the attempt's submit entry in the agent's inbox (`read_inbox`), acked by
        the same script call whatever the outcome (no `ack_inbox` round trip of its own); '' for none."""
        return await self.scripts.accept(task_id, attempt, agent_id, self._now(), inbox_entry)

    async def progress(self, task_id: str, attempt: int, agent_id: str, payload_json: bytes) -> Applied:
        """`payload_json` is the encoded `TaskProgress` without `seq`; the script adds it.

        Progress frames applied in the same loop turn (a stream of many tasks) share one script call, as
        results do (see `scheduler.coalesce`); frames of one task keep their order within the call.
        """
        return await self.progress_soon(task_id, attempt, agent_id, payload_json)

    def progress_soon(self, task_id: str, attempt: int, agent_id: str, payload_json: bytes) -> asyncio.Future[Applied]:
        """`progress` without the await: the future of this frame's share of the turn's batched call."""
        _require_object(payload_json)
        return self._progress.submit((task_id, attempt, agent_id, payload_json))

    def progress_many(self, frames: Sequence[tuple[str, int, str, bytes]]) -> asyncio.Future[list[Applied]]:
        """`progress_soon` for several frames (task id, attempt, agent id, payload JSON) with one future for
        all their answers, in order: one done callback for a batch frame's progress instead of one per item."""
        for frame in frames:
            _require_object(frame[3])
        return self._progress.submit_many(frames)

    async def stream(self, task_id: str, attempt: int, agent_id: str, offset: int, delta: str) -> Applied:
        """Append a `task/stream` piece at `offset` (UTF-8 bytes of the attempt's stream before it).

        Repeated text is ignored (`DUPLICATE`) or trimmed to its new part; a piece beyond the end is
        `STREAM_GAP` with `expected_offset`.
        """
        return await self.scripts.stream(task_id, attempt, agent_id, self._now(), offset=offset, delta=delta)

    async def complete(
        self, task_id: str, attempt: int, agent_id: str, output_json: bytes | None = None, *, inbox_entry: str = ""
    ) -> Applied:
        """Results completed in the same loop turn share one script call (see `scheduler.coalesce`).

        `inbox_entry`: as for `accept`, acked by the same call.

        `output_json`: kept in Redis for `output_keep_s` so a lost commit can be filled in (`pending_outputs`).
        """
        return await self._completes.call((task_id, attempt, agent_id, output_json, inbox_entry))

    async def fail(
        self,
        task_id: str,
        attempt: int,
        agent_id: str,
        *,
        error: str,
        message: str,
        retryable: bool,
        retry_delay_s: float | None = None,
        inbox_entry: str = "",
    ) -> Applied:
        """`inbox_entry`: as for `accept`, acked by the same call."""
        return await self.scripts.fail(
            task_id,
            attempt,
            agent_id,
            self._now(),
            error=error,
            message=message,
            retryable=retryable,
            retry_delay_s=retry_delay_s,
            inbox_entry=inbox_entry,
        )

    async def pending_outputs(self, task_ids: Sequence[str]) -> dict[str, bytes]:
        """The kept outputs of these finished tasks (those Redis still has)."""
        if not task_ids:
            return {}
        values = await self._redis.mget([self.keys.pending_output(task_id) for task_id in task_ids])
        return {
            task_id: value if isinstance(value, bytes) else str(value).encode()
            for task_id, value in zip(task_ids, values, strict=True)
            if value is not None
        }

    # --- presence ------------------------------------------------------------------------------

    async def agent_online(self, spec: AgentSpec, *, lease_s: float, session_id: str = "") -> bool:
        """On connect and every heartbeat; True when the agent just came online.

        `session_id` names the socket: only the latest one's close starts a reconnect grace."""
        return await self.scripts.heartbeat(spec, int(lease_s * 1000), self._now(), session_id)

    async def agent_closed(self, agent_id: str, session_id: str, *, grace_s: float) -> None:
        """The agent's socket closed: stop offering it work; unless it reconnects within `grace_s` (or
        another session of it is live already), the reaper requeues its tasks then."""
        await self.scripts.agent_closed(agent_id, session_id, int(grace_s * 1000), self._now())

    async def reconcile_agent(self, agent_id: str, running: list[tuple[str, int]]) -> ReconcileResult:
        """Requeue the agent's running attempts its (new session's first) heartbeat does not list."""
        return await self.scripts.reconcile_agent(agent_id, running, self._now())

    async def agent_offline(self, agent_id: str, *, requeue_now: bool) -> int:
        """requeue_now: tasks back to queued at once and presence removed (delete, rotate);
        else the agent only stops getting work and the reaper acts when its lease runs out."""
        return await self.scripts.agent_offline(agent_id, requeue_now, self._now())

    async def online_agents(self) -> list[AgentPresence]:
        return await read_online(self._redis, self.keys, self._now())

    async def is_online(self, agent_id: str) -> bool:
        lease = await self._redis.zscore(self.keys.agents(), agent_id)
        return lease is not None and int(lease) > self._now()

    async def stale_attempts(self, agent_id: str, reported: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Of the (task, attempt) pairs an agent says it runs, those it no longer holds.

        An attempt is live while its task is assigned/running, on that attempt, on that agent; also once that
        attempt of that agent finished the task: the agent lists outcomes not acknowledged yet, and one whose
        commit was lost (a replica died) must be resent, not cancelled.
        Read-only and not atomic: a caller only uses it to tell an agent to drop work.
        """
        pipe = self._redis.pipeline(transaction=False)
        for task_id, _ in reported:
            pipe.hmget(self.keys.task(task_id), "status", "attempt", "agent", "fin")
        rows = await pipe.execute()
        agent = agent_id.encode()
        stale: list[tuple[str, int]] = []
        for (task_id, attempt), (status, current, holder, fin) in zip(reported, rows, strict=True):
            live = status in (b"assigned", b"running") and current is not None and int(current) == attempt
            finished_by_it = fin is not None and fin.startswith(b"%d:%s:" % (attempt, agent))
            if not (live and holder == agent) and not finished_by_it:
                stale.append((task_id, attempt))
        return stale

    # --- inboxes -------------------------------------------------------------------------------

    async def read_inbox(self, agent_id: str, consumer: str, *, block_ms: int, count: int) -> list[InboxEntry]:
        rows = await read_group(
            self._blocking,
            self.keys.inbox(agent_id),
            INBOX_GROUP,
            consumer,
            block_ms=block_ms,
            count=count,
            ttl_s=self.settings.inbox_ttl_s,
        )
        return [parse_inbox_entry(eid, f) for eid, f in rows]

    async def claim_inbox_pending(
        self, agent_id: str, consumer: str, *, min_idle_ms: int = 0, count: int = 1000
    ) -> list[InboxEntry]:
        """Entries delivered earlier (to any consumer: a dead session) and never acknowledged."""
        rows = await claim_pending(
            self._redis, self.keys.inbox(agent_id), INBOX_GROUP, consumer, min_idle_ms=min_idle_ms, count=count
        )
        return [parse_inbox_entry(eid, f) for eid, f in rows]

    async def ack_inbox(self, agent_id: str, entry_ids: Sequence[str]) -> None:
        if not entry_ids:
            return
        pipe = self._redis.pipeline(transaction=False)
        pipe.xack(self.keys.inbox(agent_id), INBOX_GROUP, *entry_ids)
        pipe.xdel(self.keys.inbox(agent_id), *entry_ids)
        await pipe.execute()

    # --- events --------------------------------------------------------------------------------

    async def read_events(self, consumer: str, *, block_ms: int, count: int) -> list[TaskEvent]:
        reply = await read_group_reply(
            self._blocking, self.keys.events(), RECORDER_GROUP, consumer, block_ms=block_ms, count=count, ttl_s=None
        )
        return stream_events(reply)

    async def claim_events_pending(self, consumer: str, *, min_idle_ms: int, count: int = 500) -> list[TaskEvent]:
        """Events a crashed recorder read but never acknowledged."""
        rows = await claim_pending(
            self._redis, self.keys.events(), RECORDER_GROUP, consumer, min_idle_ms=min_idle_ms, count=count
        )
        return [event for eid, f in rows for event in events_of(eid, f)]

    async def ack_events(self, entry_ids: Sequence[str]) -> None:
        if entry_ids:
            await self._redis.xack(self.keys.events(), RECORDER_GROUP, *entry_ids)

    async def events_backlog(self) -> int:
        """Events the recorders have not applied yet: never delivered (`lag`) plus delivered but unacknowledged."""
        try:
            groups = await self._redis.xinfo_groups(self.keys.events())
        except redis.exceptions.ResponseError:  # no stream yet: nothing was ever emitted
            return 0
        for group in groups:
            if as_str(group.get("name")) == RECORDER_GROUP:
                lag, pending = group.get("lag"), group.get("pending")
                if lag is None:  # Redis cannot tell (entries deleted mid-range): count the whole stream
                    lag = await self._redis.xlen(self.keys.events())
                return int(lag) + int(pending or 0)
        return int(await self._redis.xlen(self.keys.events()))

    async def history(self, task_id: str, after_seq: int = 0, *, count: int = 1000) -> list[TaskEvent]:
        """The task's events with seq > after_seq, oldest first, at most `count` (bounded history: old progress
        and stream events may be trimmed, so the seqs may have gaps; the database has the full history).

        Status events live in the task hash (fields `e{seq}`, written with the status change itself), progress
        and stream events in the history stream; this merges both.
        """
        pipe = self._redis.pipeline(transaction=False)
        pipe.xrange(self.keys.history(task_id), f"0-{after_seq + 1}", "+", count=count)
        pipe.hget(self.keys.task(task_id), "owner")
        reply, owner = await pipe.execute()
        events = [parse_event(eid, f) for eid, f in stream_entries([(b"", reply)])]
        if owner is not None:
            async for field, value in self._redis.hscan_iter(self.keys.task(task_id), match="e[0-9]*", count=1000):
                if int(as_str(field)[1:]) > after_seq:
                    events.append(status_event(task_id, as_str(owner), value))
        events.sort(key=lambda e: e.seq)
        return events[:count]

    # --- fan-out and control -------------------------------------------------------------------

    async def publish_control(
        self, kind: Literal["agent_revoked", "agent_updated", "token_revoked", "user_disabled"], subject_id: str
    ) -> None:
        await self._redis.publish(self.keys.control_channel(), json.dumps({"kind": kind, "id": subject_id}))

    # --- task counts for /metrics (scheduler/counts.py) ---------------------------------------

    async def task_counts(self) -> dict[str, int] | None:
        """Tasks per status; None until the finished-task counters were seeded from the database."""
        return await counts.read(self._redis, self.keys)

    async def finished_counts(self) -> tuple[dict[str, int], bool]:
        return await counts.finished_counts(self._redis, self.keys)

    async def seed_finished(self, deltas: Mapping[str, int]) -> bool:
        return await counts.seed(self._redis, self.keys, deltas)

    async def forget_finished(self, deleted: Mapping[str, int]) -> None:
        await counts.add(self._redis, self.keys, {status: -n for status, n in deleted.items()})

    async def count_finished(self, status: str) -> None:
        """Count a task that finished in the database alone (Redis did not know it)."""
        await counts.add(self._redis, self.keys, {status: 1})

    # --- rebuild after a Redis restart ---------------------------------------------------------

    async def epoch_present(self) -> bool:
        return bool(await self._redis.exists(self.keys.epoch()))

    async def mark_epoch(self) -> None:
        await self._redis.set(self.keys.epoch(), str(self._now()))

    async def known_task_ids(self, ids: Iterable[str]) -> set[str]:
        wanted = list(ids)
        if not wanted:
            return set()
        keys = [self.keys.task(task_id) for task_id in wanted]
        # The usual answer (Redis holds every one: the reconciler asks about each waiting task once) in one
        # command; only a chunk with some missing is asked key by key. EXISTS counts a repeated key each time.
        if await self._redis.exists(*keys) == len(keys):
            return set(wanted)
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        found = await pipe.execute()
        return {task_id for task_id, hit in zip(wanted, found, strict=True) if hit}
