"""The fan-out's delivery rounds, in process: real sessions and registry, sockets that record what is sent.

A round hands events to at most `SLICE_SESSIONS` sessions per loop turn; events read meanwhile wait for the next
round. Each session still gets each task's events in order, once; sessions that take shared chunks send the same
encoded text.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec

from api.ws.client_session import ClientSession
from api.ws.events import EventChunk
from api.ws.fanout import SLICE_SESSIONS, Fanout
from api.ws.framing import FrameSocket, ViolationBudget
from api.ws.registry import SessionRegistry
from protocol.messages import FEATURE_BATCH
from tests.integration.api.test_ws_support import ws_settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from api.settings import ApiSettings


class _RecordingSocket:
    """A peer that reads everything at once: keeps each text frame sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self._never = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self._never.wait()
        return {"type": "websocket.disconnect", "code": 1000}

    async def send_text(self, text: str) -> None:
        self.sent.append(text)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        return None


def _session(
    settings: ApiSettings, registry: SessionRegistry, *, batch: bool
) -> tuple[ClientSession, _RecordingSocket]:
    from api.auth.identity import CurrentUser

    sock = _RecordingSocket()
    conn = FrameSocket(sock, max_frame_bytes=1 << 20, budget=ViolationBudget(10))  # type: ignore[arg-type]
    user = CurrentUser(id="u1", email="u@example.com", name="u", role="user", jti="j", token_exp=2**40)
    session = ClientSession(
        conn,
        f"s{id(sock)}",
        user=user,
        registry=registry,
        scheduler=None,  # type: ignore[arg-type]
        db=None,  # type: ignore[arg-type]
        settings=settings.ws,
    )
    session.features = [FEATURE_BATCH] if batch else None
    session._all = True  # what an accepted `subscribe {all: true}` sets
    registry.watch_owner("u1", session)
    return session, sock


def _published(task_id: str, seq: int, owner: str = "u1") -> list[bytes]:
    """A pub/sub reply for what the scripts publish on the owner's watch channel."""
    body = {"taskId": task_id, "seq": seq, "attempt": 1, "data": {"n": seq}}
    message = {"type": "task/progress", "ownerId": owner, "taskId": task_id, "seq": seq, "payload": body}
    return [b"pmessage", b"t:watch:*", f"t:watch:{owner}".encode(), msgspec.json.encode(message)]


def _events(texts: list[str]) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for text in texts:
        frame = msgspec.json.decode(text)
        for item in frame["payload"]["frames"] if frame["type"] == "batch" else [frame]:
            found.append((item["payload"]["taskId"], item["payload"]["seq"]))
    return found


async def test_rounds_slice_the_sessions_and_keep_each_tasks_order(make_settings: Callable[..., ApiSettings]) -> None:
    settings = ws_settings(make_settings)
    registry = SessionRegistry()
    sessions = [_session(settings, registry, batch=True) for _ in range(SLICE_SESSIONS * 3)]
    plain, plain_sock = _session(settings, registry, batch=False)
    fanout = Fanout(None, prefix="t", registry=registry)  # type: ignore[arg-type]  # no Redis: fed by hand
    runners = [asyncio.create_task(s.run()) for s, _ in [*sessions, (plain, plain_sock)]]
    try:
        # One socket read: three events of each of two tasks.
        fanout._handle_batch([_published(task, seq) for seq in range(1, 4) for task in ("a", "b")])
        await asyncio.sleep(0)  # the first slice of the round
        given = [sock for session, sock in sessions if session._queued or sock.sent]
        assert 0 < len(given) <= SLICE_SESSIONS
        # Read while the round is under way (one read each): the next round takes them.
        for seq in range(4, 7):
            fanout._handle_batch([_published("a", seq)])
        for _ in range(50):
            await asyncio.sleep(0)
        expected = sorted([("a", n) for n in range(1, 7)] + [("b", n) for n in range(1, 4)])
        for _, sock in [*sessions, (plain, plain_sock)]:
            seen = _events(sock.sent)
            assert sorted(seen) == expected  # every event, once
            for task in ("a", "b"):
                seqs = [seq for t, seq in seen if t == task]
                assert seqs == sorted(seqs)
        assert len(plain_sock.sent) == 9  # no `batch` asked: one frame per event
        # Sockets that sent a round's chunk alone sent the very same text, encoded once.
        firsts = {id(sock.sent[0]) for _, sock in sessions}
        assert len(firsts) == 1
    finally:
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)


async def test_dispatch_raw_delivers_at_once_after_what_was_read_before(
    make_settings: Callable[..., ApiSettings],
) -> None:
    settings = ws_settings(make_settings)
    registry = SessionRegistry()
    session, _ = _session(settings, registry, batch=True)
    fanout = Fanout(None, prefix="t", registry=registry)  # type: ignore[arg-type]  # no Redis: fed by hand
    fanout._handle_batch([_published("a", 1)])  # read, not handed out yet
    assert fanout.dispatch_raw(_raw("a", 2)) == 1
    assert session._queued == 2  # both, in order, without waiting for the loop
    items = [frame for item in session._outbox for frame in (item.frames if isinstance(item, EventChunk) else [item])]
    assert [msgspec.json.decode(f)["payload"]["seq"] for f in items] == [1, 2]


def _raw(task_id: str, seq: int) -> bytes:
    return _published(task_id, seq)[3]


async def test_a_single_task_watcher_gets_that_task_only_and_owner_watchers_get_all(
    make_settings: Callable[..., ApiSettings],
) -> None:
    settings = ws_settings(make_settings)
    registry = SessionRegistry()
    owner, _ = _session(settings, registry, batch=True)
    single, _ = _session(settings, registry, batch=True)
    registry.unwatch_owner("u1", single)
    single._all = False
    single._simple = False  # what `subscribe {taskId}` sets
    single._tasks.add("a")
    registry.watch_task("a", single)
    fanout = Fanout(None, prefix="t", registry=registry)  # type: ignore[arg-type]  # no Redis: fed by hand
    fanout._handle_batch([_published(task, seq) for seq in (1, 2) for task in ("a", "b", "c")])
    fanout._flush_all()

    def queued(session: ClientSession) -> list[tuple[str, int]]:
        items = [f for item in session._outbox for f in (item.frames if isinstance(item, EventChunk) else [item])]
        return [(p["taskId"], p["seq"]) for p in (msgspec.json.decode(f)["payload"] for f in items)]

    assert queued(single) == [("a", 1), ("a", 2)]
    # Grouped by who wants them: each task's events in order (no order is promised across tasks).
    assert sorted(queued(owner), key=lambda e: e[0]) == [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("c", 1), ("c", 2)]


async def test_events_nobody_here_wants_are_dropped_as_read(make_settings: Callable[..., ApiSettings]) -> None:
    settings = ws_settings(make_settings)
    registry = SessionRegistry()
    _session(settings, registry, batch=True)  # watches u1's tasks
    fanout = Fanout(None, prefix="t", registry=registry)  # type: ignore[arg-type]  # no Redis: fed by hand
    fanout._handle_batch([_published("x", 1, owner="u2"), _published("a", 1), _published("y", 1, owner="u3")])
    assert [(e.owner_id, e.task_id) for e in fanout._pending] == [("u1", "a")]
    registry.watch_task("y", _session(settings, registry, batch=False)[0])  # one of u3's tasks, by its id
    fanout._handle_batch([_published("x", 2, owner="u2"), _published("y", 2, owner="u3")])
    assert [(e.owner_id, e.task_id) for e in fanout._pending] == [("u1", "a"), ("u3", "y")]
