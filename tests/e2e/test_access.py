"""Access over real HTTP and WebSocket: users see only their own tasks; bad agent credentials are refused."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from protocol.envelope import decode_frame, encode_frame
from protocol.limits import MAX_AGENT_FRAME_BYTES
from protocol.messages import Subscribe
from tests.e2e.scripted_agent import ScriptedAgent
from tests.e2e.stack import Stack, wait_until

pytestmark = pytest.mark.e2e


def test_user_b_cannot_read_list_cancel_or_watch_user_a_tasks(stack: Stack) -> None:
    alice = stack.register_user("alice@example.com")
    bob = stack.register_user("bob@example.com")
    task_id = stack.submit(alice, type="noop", input={"secret": "alice"}, capabilities=["nobody"])["id"]

    with stack.http(bob) as client:
        foreign = client.get(f"/api/tasks/{task_id}")
        unknown = client.get("/api/tasks/00000000-0000-4000-8000-000000000000")
        assert foreign.status_code == unknown.status_code == 404
        assert foreign.json()["error"] == unknown.json()["error"] == "not_found"
        assert client.post(f"/api/tasks/{task_id}/cancel").status_code == 404
        listed = client.get("/api/tasks").json()
        assert task_id not in {item["id"] for item in listed["items"]}
    assert stack.task(alice, task_id)["status"] == "queued"

    async def bob_subscribes() -> str:
        url = stack.api_url.replace("http://", "ws://") + "/ws?role=client"
        async with connect(url, additional_headers={"Authorization": f"Bearer {bob}"}) as socket:
            assert decode_frame(await socket.recv(), max_bytes=MAX_AGENT_FRAME_BYTES).type == "auth/ok"
            await socket.send(encode_frame(Subscribe(task_id=task_id)).decode())
            while True:
                frame = decode_frame(await asyncio.wait_for(socket.recv(), 10), max_bytes=MAX_AGENT_FRAME_BYTES)
                if frame.type in ("error", "ack"):
                    return str(getattr(frame.payload, "error", frame.type))

    assert asyncio.run(bob_subscribes()) == "not_found"


def test_wrong_rotated_and_deleted_agent_tokens_are_refused_at_the_handshake(stack: Stack) -> None:
    admin = stack.create_admin()
    agent_id, token = stack.create_agent(capabilities=["x"], name="x")

    async def handshake(agent: str, secret: str) -> str:
        url = stack.api_url.replace("http://", "ws://") + f"/ws?role=agent&agent_id={agent}"
        try:
            async with connect(url, additional_headers={"Authorization": f"Bearer {secret}"}) as socket:
                frame = decode_frame(await asyncio.wait_for(socket.recv(), 10), max_bytes=MAX_AGENT_FRAME_BYTES)
                return frame.type
        except ConnectionClosed as exc:
            return f"closed {exc.rcvd.code if exc.rcvd else None}"
        except Exception as exc:  # a refused upgrade (HTTP 401/403) is a refusal too
            return f"refused {type(exc).__name__}"

    assert asyncio.run(handshake(agent_id, token)) == "auth/ok"
    assert asyncio.run(handshake(agent_id, token + "x")) != "auth/ok"

    with stack.http(admin) as client:
        rotated = client.post(f"/api/agents/{agent_id}/rotate-token")
        assert rotated.status_code in (200, 201)
        new_token = rotated.json()["token"]
    assert asyncio.run(handshake(agent_id, token)) != "auth/ok"
    assert asyncio.run(handshake(agent_id, new_token)) == "auth/ok"

    # A connected agent is cut off when it is deleted, and cannot come back.
    agent = ScriptedAgent(stack.api_url, agent_id, new_token, name="doomed").start()
    try:
        with stack.http(admin) as client:
            assert client.delete(f"/api/agents/{agent_id}").status_code in (200, 204)
        assert asyncio.run(handshake(agent_id, new_token)) != "auth/ok"
        wait_until(
            lambda: agent._thread is not None and not agent._thread.is_alive(),
            timeout_s=10,
            what="the deleted agent's socket closed",
        )
    finally:
        agent.stop()
