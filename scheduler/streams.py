"""Reading the Redis Streams the scripts write: agent inboxes and the global events stream.

Reads only (plus consumer-group bookkeeping); never changes task state.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from redis.exceptions import ResponseError

from scheduler.scripts import as_str
from scheduler.types import InboxEntry, TaskEvent

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from redis.asyncio import Redis

logger = logging.getLogger(__name__)

__all__ = (
    "ensure_group",
    "event_of",
    "events_of",
    "parse_event",
    "parse_inbox_entry",
    "read_group",
    "read_group_reply",
    "status_event",
    "stream_entries",
    "stream_events",
)


def _fields(raw: Any) -> dict[str, bytes]:
    if raw is None:
        return {}
    if isinstance(raw, dict):
        pairs: Any = raw.items()
    else:
        it = iter(raw)
        pairs = list(zip(it, it, strict=True))
    try:
        # What Redis sends: bytes names and values (~11 fields per event, several events per task, so no
        # call per field); anything else (str names from another client setup) takes the general path.
        return {k.decode(): v if v.__class__ is bytes else str(v).encode() for k, v in pairs}
    except AttributeError:
        return {as_str(k): v if isinstance(v, bytes) else str(v).encode() for k, v in pairs}


def _raw_entries(reply: Any) -> list[tuple[str, Any]]:
    """Flattens an XREAD/XREADGROUP reply (list or dict shaped) to (entry id, fields as the client gave them)."""
    if not reply:
        return []
    groups = reply.items() if isinstance(reply, dict) else ((g[0], g[1]) for g in reply)
    out: list[tuple[str, Any]] = []
    for _stream, group_entries in groups:
        # RESP3 (legacy_responses=True) wraps each stream's entries in one more list: [[(id, fields), ...]].
        entries = group_entries
        wrapped = len(entries) == 1 and isinstance(entries[0], list)
        if wrapped and (not entries[0] or isinstance(entries[0][0], list | tuple)):
            entries = entries[0]
        for entry_id, raw in entries:
            if raw is not None:  # an entry deleted after delivery
                out.append((as_str(entry_id), raw))
    return out


def stream_entries(reply: Any) -> list[tuple[str, dict[str, bytes]]]:
    """Flattens an XREAD/XREADGROUP reply (list or dict shaped) to (entry id, fields)."""
    return [(entry_id, _fields(raw)) for entry_id, raw in _raw_entries(reply)]


def stream_events(reply: Any) -> list[TaskEvent]:
    """The events of an XREADGROUP reply on the events stream (`events_of` each entry), in stream order."""
    out: list[TaskEvent] = []
    for entry_id, raw in _raw_entries(reply):
        out += events_of(entry_id, raw)
    return out


def events_of(entry_id: str, raw: Any) -> list[TaskEvent]:
    """An entry's events: one, or two for a result that implied its attempt's accept. complete.lua then writes
    one `done` entry whose `running` field holds the implied `running` event's payload (seq one below, same
    attempt, agent and time): one entry per result instead of two. Both events share the entry id."""
    if isinstance(raw, dict) and b"task_id" in raw:
        event = event_of(entry_id, raw)
        running = raw.get(b"running")
    else:
        fields = _fields(raw)
        event = parse_event(entry_id, fields)
        running = fields.get("running")
    if running is None:
        return [event]
    implied = msgspec.structs.replace(
        event, seq=event.seq - 1, status="running", reason=None, payload_json=running, queued_ms=None
    )
    return [implied, event]


def parse_inbox_entry(entry_id: str, f: dict[str, bytes]) -> InboxEntry:
    kind = f["kind"].decode()
    return InboxEntry(
        entry_id=entry_id,
        kind="cancel" if kind == "cancel" else "submit",
        task_id=f["task_id"].decode(),
        attempt=int(f["attempt"]),
        payload_json=f["payload"],
    )


_EVENT_TYPES: dict[str, Literal["task/status", "task/progress", "task/stream"]] = {
    "task/progress": "task/progress",
    "task/stream": "task/stream",
}


def event_of(entry_id: str, raw: Any) -> TaskEvent:
    """`parse_event` of an entry's fields as the client gave them. The recorder reads every event (about four
    per task): fields as Redis sends them (a dict of bytes names and values) are read in place, without the
    str-named copy `_fields` makes (a third of the cost); any other shape goes through it."""
    if isinstance(raw, dict):
        try:
            return TaskEvent(
                entry_id,
                raw[b"task_id"].decode(),
                raw[b"owner_id"].decode(),
                int(raw[b"seq"]),
                _EVENT_TYPES.get(raw[b"type"].decode(), "task/status"),
                raw.get(b"status", b"").decode() or None,
                int(raw[b"attempt"]),
                raw.get(b"agent_id", b"").decode() or None,
                int(raw[b"at_ms"]),
                raw.get(b"reason", b"").decode() or None,
                raw[b"payload"],
                int(raw[b"queued_ms"]) if b"queued_ms" in raw else None,
            )
        except (KeyError, AttributeError):  # str names or non-bytes values (another client setup)
            pass
    return parse_event(entry_id, _fields(raw))


def parse_event(entry_id: str, f: dict[str, bytes]) -> TaskEvent:
    status = f.get("status", b"").decode()
    agent = f.get("agent_id", b"").decode()
    reason = f.get("reason", b"").decode()
    etype = f["type"].decode()
    return TaskEvent(
        entry_id=entry_id,
        task_id=f["task_id"].decode(),
        owner_id=f["owner_id"].decode(),
        seq=int(f["seq"]),
        type=_EVENT_TYPES.get(etype, "task/status"),
        status=status or None,
        attempt=int(f["attempt"]),
        agent_id=agent or None,
        at_ms=int(f["at_ms"]),
        reason=reason or None,
        payload_json=f["payload"],
        queued_ms=int(f["queued_ms"]) if "queued_ms" in f else None,
    )


async def ensure_group(redis: Redis, stream: str, group: str, *, ttl_s: int | None) -> None:
    """Creates the consumer group (and the stream); a concurrent creator is fine."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    if ttl_s is not None and await redis.ttl(stream) == -1:
        # Only a stream with no expiry yet: a live inbox keeps the TTL its scripts set.
        # (EXPIRE NX would say this in one call, but needs Redis 7; the embedded server is 6.2.)
        await redis.expire(stream, ttl_s)


# Reads still in flight after their caller was cancelled (see `_uncancellable`); kept referenced
# until they end, within their block time.
_in_flight: set[asyncio.Task[Any]] = set()


async def _uncancellable(coro: Awaitable[Any]) -> Any:
    """Runs a blocking read so that cancelling the caller does not cancel the Redis command.

    Cancelling a task inside a redis-py 8.1 command can leave it stuck in "cancelling" for good
    (a pool lock waiter never woken; reproduced on Python 3.11.7). The read runs in its own task
    and ends within its block time; entries it read for a cancelled caller stay pending in the
    group, and `claim_pending` hands them to the next reader.
    """
    task = asyncio.ensure_future(coro)
    _in_flight.add(task)
    task.add_done_callback(_settle)
    return await asyncio.shield(task)


def _settle(task: asyncio.Task[Any]) -> None:
    """Forgets a finished read; an error nobody waits for any more is logged, not left unretrieved."""
    _in_flight.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.debug("abandoned stream read ended with %r", task.exception())


async def read_group(
    redis: Redis, stream: str, group: str, consumer: str, *, block_ms: int, count: int, ttl_s: int | None
) -> list[tuple[str, dict[str, bytes]]]:
    """New entries for `consumer`; block_ms <= 0 means do not block."""
    return stream_entries(
        await read_group_reply(redis, stream, group, consumer, block_ms=block_ms, count=count, ttl_s=ttl_s)
    )


async def read_group_reply(
    redis: Redis, stream: str, group: str, consumer: str, *, block_ms: int, count: int, ttl_s: int | None
) -> Any:
    """`read_group`'s XREADGROUP reply, unparsed (see `stream_events`)."""
    try:
        reply = await _uncancellable(
            redis.xreadgroup(group, consumer, {stream: ">"}, count=count, block=block_ms or None)
        )
    except ResponseError as exc:
        if "UNBLOCKED" in str(exc):
            # The stream was deleted while we blocked on it (agent_offline): nothing to deliver.
            return []
        if "NOGROUP" not in str(exc):
            raise
        # First reader of this stream (or it expired): create the group from the start, read again.
        await ensure_group(redis, stream, group, ttl_s=ttl_s)
        reply = await redis.xreadgroup(group, consumer, {stream: ">"}, count=count, block=block_ms or None)
    return reply


async def claim_pending(
    redis: Redis, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int
) -> list[tuple[str, dict[str, bytes]]]:
    """Takes over entries delivered but not acknowledged (to any consumer, idle >= min_idle_ms)."""
    out: list[tuple[str, dict[str, bytes]]] = []
    cursor: Any = "0-0"
    try:
        while True:
            # Reply: [next cursor, entries] on 6.2, plus deleted ids on 7.x.
            reply = await redis.xautoclaim(stream, group, consumer, min_idle_ms, start_id=cursor, count=count)
            cursor = reply[0]
            out.extend((as_str(eid), _fields(raw)) for eid, raw in reply[1] if raw is not None)
            if as_str(cursor) == "0-0" or len(out) >= count:
                return out
    except ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        return out


class _StatusBody(msgspec.Struct, rename="camel"):
    """The fields of a stored `task/status` payload that a `TaskEvent` carries."""

    seq: int
    status: str
    attempt: int
    at: str
    agent_id: str | None = None
    reason: str | None = None


_STATUS_DECODER = msgspec.json.Decoder(_StatusBody)


def status_event(task_id: str, owner_id: str, payload_json: bytes) -> TaskEvent:
    """A `task/status` event from its payload as the task hash keeps it (field `e{seq}`)."""
    body = _STATUS_DECODER.decode(payload_json)
    at_ms = int(dt.datetime.fromisoformat(body.at).timestamp() * 1000)
    return TaskEvent(
        entry_id=f"0-{body.seq}",
        task_id=task_id,
        owner_id=owner_id,
        seq=body.seq,
        type="task/status",
        status=body.status,
        attempt=body.attempt,
        agent_id=body.agent_id,
        at_ms=at_ms,
        reason=body.reason,
        payload_json=payload_json,
    )
