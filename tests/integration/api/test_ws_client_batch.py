"""Watchers that negotiate `batch` on a real server (Redis, database, sockets).

Such a client is told so in `auth/ok`, may send its own frames in a `batch` (each item answered by its id,
a bad item refused alone), and gets what its send queue holds at once as one `batch` frame: a replay of a
task's history arrives in one frame, items in `seq` order, each a frame as it would have come alone. A client
that asks nothing sees the protocol as before, one frame per event.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from protocol.envelope import encode_batch, encode_payload
from protocol.messages import Batch, Subscribe, TaskProgress, TaskResult
from tests.integration.api.test_ws_support import WAIT_S, Peer, Person, Stack, open_stack, payload, ws_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from api.settings import ApiSettings
    from protocol.envelope import Frame

pytestmark = [pytest.mark.redis, pytest.mark.e2e]

EVENTS = 30


@pytest.fixture
async def ungated_stack(make_settings: Callable[..., ApiSettings]) -> AsyncIterator[Stack]:
    """No progress coalescing: every progress frame the agent sends becomes an event."""
    async for running in open_stack(ws_settings(make_settings, TASKYARD_API_PROGRESS_RATE_PER_S=0)):
        yield running


def _items(frame: Frame) -> list[tuple[str, dict[str, Any]]]:
    """(type, payload) of a frame, or of each item of a `batch` frame, in order."""
    if isinstance(frame.payload, Batch):
        return [(item.type, msgspec.json.decode(item.payload)) for item in frame.payload.frames]
    return [(frame.type, payload(frame))]


async def _batch_client(stack: Stack, person: Person) -> Peer:
    peer = await stack.open("role=client&features=batch", {"Authorization": f"Bearer {person.token}"})
    first = await peer.recv()
    assert first.type == "auth/ok", first
    assert payload(first)["features"] == ["batch"]
    return peer


async def _events_until_done(peer: Peer, task_id: str) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """The task's events up to its `done`, and how many frames carried them."""
    events: list[tuple[str, dict[str, Any]]] = []
    frames = 0
    async with asyncio.timeout(WAIT_S):
        while not any(kind == "task/status" and body.get("status") == "done" for kind, body in events):
            frame = await peer.recv()
            mine = [(k, b) for k, b in _items(frame) if k.startswith("task/") and b.get("taskId") == task_id]
            frames += bool(mine)
            events += mine
    return events, frames


async def _stream_to_done(stack: Stack, owner: Person) -> str:
    """A task whose agent sends EVENTS progress frames, then its result (acked)."""
    agent, _, task_id, attempt = await stack.running_task(owner)
    for i in range(EVENTS):
        await agent.send(TaskProgress(task_id=task_id, attempt=attempt, data={"i": i}))
    ref = await agent.send(TaskResult(task_id=task_id, attempt=attempt, output={"ok": True}))
    async with asyncio.timeout(WAIT_S):
        while payload(await agent.recv_type("ack"))["ref"] != ref:
            pass
    return task_id


async def test_batch_watcher_gets_every_event_in_order_and_a_replay_in_one_frame(ungated_stack: Stack) -> None:
    stack = ungated_stack
    owner = await stack.person()
    live = await _batch_client(stack, owner)
    # Its own frames in one batch: each item answered by its id, the bad one refused alone.
    sub_id, bad_id = str(uuid.uuid4()), str(uuid.uuid4())
    await live.send_raw(
        encode_batch(
            [("subscribe", encode_payload(Subscribe(all=True)), sub_id), ("task/accept", b"{}", bad_id)]
        ).decode()
    )
    answers: dict[str, str] = {}
    async with asyncio.timeout(WAIT_S):
        while len(answers) < 2:
            for kind, body in _items(await live.recv_type("ack", "error", "batch")):
                answers[body["ref"]] = kind if kind == "ack" else body["error"]
    assert answers == {sub_id: "ack", bad_id: "validation_error"}

    task_id = await _stream_to_done(stack, owner)
    live_events, _ = await _events_until_done(live, task_id)
    seqs = [body["seq"] for _, body in live_events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # in order, no gap, no duplicate
    assert [body["data"]["i"] for kind, body in live_events if kind == "task/progress"] == list(range(EVENTS))

    # A replay is queued whole before the writer runs: ack and history leave as one batch frame.
    replayer = await _batch_client(stack, owner)
    ref = await replayer.send(Subscribe(task_id=task_id, last_seq=0))
    frame = await replayer.recv()
    assert frame.type == "batch"
    items = _items(frame)
    assert items[0] == ("ack", {"ref": ref})
    replayed = [body for kind, body in items[1:] if kind.startswith("task/")]
    assert [body["seq"] for body in replayed] == list(range(1, len(replayed) + 1))
    assert replayed[-1]["status"] == "done"
    assert [b["data"]["i"] for b in replayed if "data" in b] == list(range(EVENTS))


async def test_client_asking_nothing_gets_one_frame_per_event(ungated_stack: Stack) -> None:
    stack = ungated_stack
    owner = await stack.person()
    task_id = await _stream_to_done(stack, owner)
    plain = await stack.client_peer(owner)
    await plain.send(Subscribe(task_id=task_id, last_seq=0))
    assert (await plain.recv_type("ack", "batch")).type == "ack"
    events, frames = await _events_until_done(plain, task_id)
    assert frames == len(events)
    assert [body["seq"] for _, body in events] == list(range(1, len(events) + 1))


async def _subscribed(peer: Peer, sub: Subscribe) -> None:
    ref = await peer.send(sub)
    async with asyncio.timeout(WAIT_S):
        while True:
            if any(kind == "ack" and body["ref"] == ref for kind, body in _items(await peer.recv())):
                return


async def test_many_all_watchers_each_get_every_event_once_in_order(ungated_stack: Stack) -> None:
    """More `all` watchers than the fan-out hands events per loop turn, next to sockets it serves one by one.

    The batch `all` watchers take the fan-out's shared chunks; one also watching the task, and one that did not
    ask for `batch`, get events one by one. Every socket gets every event of the task exactly once, in order.
    """
    from api.ws.fanout import SLICE_SESSIONS

    stack = ungated_stack
    owner = await stack.person()
    sharing = [await _batch_client(stack, owner) for _ in range(SLICE_SESSIONS + 8)]
    for peer in sharing:
        await _subscribed(peer, Subscribe(all=True))
    plain = await stack.client_peer(owner)
    await _subscribed(plain, Subscribe(all=True))
    agent, _, task_id, attempt = await stack.running_task(owner)
    both = await _batch_client(stack, owner)
    await _subscribed(both, Subscribe(all=True))
    await _subscribed(both, Subscribe(task_id=task_id))  # `all` and the task: one by one, deduplicated
    for i in range(EVENTS):
        await agent.send(TaskProgress(task_id=task_id, attempt=attempt, data={"i": i}))
    await agent.send(TaskResult(task_id=task_id, attempt=attempt, output={"ok": True}))

    sharing_seqs: list[list[int]] = []
    for peer in [*sharing, plain, both]:
        events, frames = await _events_until_done(peer, task_id)
        seqs = [body["seq"] for _, body in events]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # in order, no gap, no duplicate
        assert [body["data"]["i"] for kind, body in events if kind == "task/progress"] == list(range(EVENTS))
        if peer is plain:
            assert frames == len(events)
        elif peer is not both:
            sharing_seqs.append(seqs)
    assert all(seqs == sharing_seqs[0] for seqs in sharing_seqs)
