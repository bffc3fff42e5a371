"""/ws under bad input and abuse: malformed and oversized frames, binary and bad UTF-8, floods, idle and
slow watchers, expired tokens. The server answers with an error frame or a close code, never dies, and
keeps serving other sockets.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from api.ws.client_session import ClientSession
from api.ws.events import WatchEvent
from api.ws.framing import CloseCode, FrameSocket, ViolationBudget
from api.ws.registry import SessionRegistry
from protocol.messages import Heartbeat, Subscribe, TaskAccept, TaskProgress, TaskResult
from tests.integration.api.test_ws_support import Stack, open_stack, payload, stack, ws_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from api.settings import ApiSettings

__all__ = ("stack",)

pytestmark = [pytest.mark.redis, pytest.mark.e2e]


def _frame(type_: str, body: dict[str, Any]) -> str:
    import json

    return json.dumps({"id": str(uuid.uuid4()), "type": type_, "ts": 1_700_000_000, "payload": body})


async def test_malformed_frames_get_error_frames_naming_the_field_and_the_socket_stays(stack: Stack) -> None:
    person = await stack.person()
    peer = await stack.client_peer(person)
    cases = [
        ("{not json", "$"),
        ('{"id": "x"}', "$.id"),
        (_frame("no/such", {}), "$.type"),
        (_frame("subscribe", {"taskId": 5}), "$.payload.taskId"),
        (_frame("subscribe", {"all": True, "extra": 1}), "$.payload.extra"),
    ]
    for raw, field in cases:
        await peer.send_raw(raw)
        answer = await peer.recv_type("error")
        assert payload(answer)["error"] == "validation_error", raw
        assert payload(answer)["details"]["field"] == field, (raw, payload(answer))
    ref = await peer.send(Subscribe(all=True))
    ok = await peer.recv()
    assert ok.type == "ack"
    assert payload(ok)["ref"] == ref


async def test_eleventh_bad_frame_within_a_minute_closes_with_1008(stack: Stack) -> None:
    person = await stack.person()
    peer = await stack.client_peer(person)
    for _ in range(10):
        await peer.send_raw("[]")
        assert (await peer.recv_type("error")).type == "error"
    await peer.send_raw("[]")
    assert await peer.closed_with() == 1008
    # The server still serves.
    again = await stack.client_peer(person)
    assert again.seen[0].type == "auth/ok"


async def test_oversized_frames_close_with_1009(stack: Stack) -> None:
    person = await stack.person()
    client = await stack.client_peer(person)
    await client.send_raw(_frame("subscribe", {"all": True, "pad": "x" * 70_000}))
    assert await client.closed_with() == 1009

    agent_id, token = await stack.agent(person)
    agent = await stack.agent_peer(agent_id, token)
    await agent.send_raw("x" * (2 * 1024 * 1024))
    assert await agent.closed_with() == 1009

    bystander = await stack.client_peer(person)
    ref = await bystander.send(Subscribe(all=True))
    assert payload(await bystander.recv())["ref"] == ref


async def test_binary_closes_with_1003_and_bad_utf8_with_1007(stack: Stack) -> None:
    person = await stack.person()
    binary = await stack.client_peer(person)
    await binary.send_raw(b"\x00\x01binary")
    assert await binary.closed_with() == 1003

    bad_text = await stack.client_peer(person)
    await bad_text.conn.send(b'{"id": "\xff\xfe"}', text=True)
    assert await bad_text.closed_with() == 1007


async def test_oversized_progress_is_refused_and_the_task_continues(stack: Stack) -> None:
    owner = await stack.person()
    agent, _agent_id, task_id, attempt = await stack.running_task(owner)
    await agent.send(TaskProgress(task_id=task_id, attempt=attempt, data="p" * 20_000))
    refused = await agent.recv_type("error")
    assert payload(refused)["error"] == "payload_too_large"
    ref = await agent.send(TaskResult(task_id=task_id, attempt=attempt, output=1))
    ack = await agent.recv_type("ack", "error")
    assert payload(ack) == {"ref": ref}
    assert (await stack.task_row(task_id)).status == "done"


async def test_oversized_result_fails_the_task_with_payload_too_large(stack: Stack) -> None:
    owner = await stack.person()
    agent, _agent_id, task_id, attempt = await stack.running_task(owner)
    ref = await agent.send(TaskResult(task_id=task_id, attempt=attempt, output="r" * 600_000))
    refused = await agent.recv_type("error", "ack")
    assert payload(refused)["error"] == "payload_too_large"
    assert payload(refused)["ref"] == ref
    row = await stack.task_row(task_id)
    assert row.status == "failed"
    assert row.result is None
    assert row.error["error"] == "payload_too_large"


@pytest.fixture
async def strict_stack(make_settings: Callable[..., ApiSettings]) -> AsyncIterator[Stack]:
    settings = ws_settings(
        make_settings,
        TASKYARD_API_CLIENT_MESSAGES_PER_MINUTE=5,
        TASKYARD_API_IDLE_TIMEOUT_S=1,
        TASKYARD_API_ACCESS_TOKEN_TTL_S=60,
    )
    async for running in open_stack(settings):
        yield running


async def test_client_flood_is_rate_limited_then_closed(strict_stack: Stack) -> None:
    person = await strict_stack.person()
    peer = await strict_stack.client_peer(person)
    for _ in range(5):
        ref = await peer.send(Subscribe(all=True))
        assert payload(await peer.recv_type("ack"))["ref"] == ref
    await peer.send(Heartbeat())
    limited = await peer.recv_type("error")
    assert payload(limited)["error"] == "rate_limited"
    for _ in range(20):
        try:
            await peer.send(Heartbeat())
        except Exception:
            break
    assert await peer.closed_with() == 1008


async def test_idle_client_is_closed_with_4408(strict_stack: Stack) -> None:
    person = await strict_stack.person()
    peer = await strict_stack.client_peer(person)
    assert await peer.closed_with() == CloseCode.IDLE


async def test_expired_access_token_closes_the_socket(make_settings: Callable[..., ApiSettings]) -> None:
    settings = ws_settings(make_settings, TASKYARD_API_ACCESS_TOKEN_TTL_S=3)
    async for running in open_stack(settings):
        person = await running.person()
        peer = await running.client_peer(person)
        assert await peer.closed_with() == 1008


# --- a slow watcher (no network: a socket whose writes never complete) ------------------------


class _StuckSocket:
    """Stands in for a peer that stopped reading: every send blocks, as a full TCP window does."""

    def __init__(self) -> None:
        self.closed_with: int | None = None
        self._never = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self._never.wait()
        return {"type": "websocket.disconnect", "code": 1000}

    async def send_text(self, text: str) -> None:
        await self._never.wait()

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed_with = code


async def test_slow_watcher_is_closed_with_4008_when_its_backlog_is_full(
    make_settings: Callable[..., ApiSettings],
) -> None:
    from api.auth.identity import CurrentUser

    settings = ws_settings(make_settings, TASKYARD_API_SEND_BACKLOG=5)
    sock = _StuckSocket()
    conn = FrameSocket(sock, max_frame_bytes=65536, budget=ViolationBudget(10))  # type: ignore[arg-type]
    registry = SessionRegistry()
    user = CurrentUser(id="u1", email="u@example.com", name="u", role="user", jti="j", token_exp=2**40)
    session = ClientSession(
        conn,
        "s1",
        user=user,
        registry=registry,
        scheduler=None,  # type: ignore[arg-type]
        db=None,  # type: ignore[arg-type]
        settings=settings.ws,
    )
    session._all = True  # what an accepted `subscribe {all: true}` sets
    registry.watch_owner("u1", session)
    runner = asyncio.create_task(session.run())
    for seq in range(1, 50):
        for target in registry.targets("u1", "t1"):
            target.deliver(WatchEvent(task_id="t1", owner_id="u1", seq=seq, frame="{}"))
    await asyncio.wait_for(runner, 10)
    assert sock.closed_with == CloseCode.LAGGED


async def test_progress_flood_is_coalesced_and_the_last_state_survives(stack: Stack) -> None:
    owner = await stack.person()
    agent_id, token = await stack.agent(owner)
    agent = await stack.agent_peer(agent_id, token)
    task_id = await stack.submit(owner, agent_id=agent_id)
    watcher = await stack.client_peer(owner)
    await watcher.send(Subscribe(task_id=task_id))
    await watcher.recv_type("ack")
    await stack.dispatch()
    attempt = payload(await agent.recv_type("task/submit"))["attempt"]
    await agent.send(TaskAccept(task_id=task_id, attempt=attempt))
    await agent.recv_type("ack")
    sent = 300
    for i in range(sent):
        await agent.send(TaskProgress(task_id=task_id, attempt=attempt, data={"i": i}))
    await agent.send(TaskResult(task_id=task_id, attempt=attempt, output="end"))
    await agent.recv_type("ack")

    frames = await watcher.recv_until(lambda f: f.type == "task/status" and payload(f)["status"] == "done")
    progress = [payload(f) for f in frames if f.type == "task/progress"]
    seqs = [payload(f)["seq"] for f in frames if f.type != "ack"]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # gap-free, in order
    assert progress[-1]["data"] == {"i": sent - 1}  # the last state is kept
    assert len(progress) < sent  # the flood was coalesced, not applied frame by frame
