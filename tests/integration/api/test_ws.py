"""/ws end to end against a real uvicorn server, real Redis and the test database.

Handshakes (agent and client, refusals), the full task flow over the wire (submit -> accept ->
progress -> result -> `done` in the database, watched in seq order), replay with `lastSeq`, tenant
isolation, fencing, duplicate results, and the control channel closing a revoked agent.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from api.ws.control import publish_control
from protocol.messages import (
    Heartbeat,
    Subscribe,
    TaskAccept,
    TaskProgress,
    TaskRef,
    TaskResult,
    Unsubscribe,
)
from tests.integration.api.test_ws_support import WAIT_S, Peer, Stack, payload, stack

__all__ = ("stack",)

pytestmark = [pytest.mark.redis, pytest.mark.e2e]


def _is_done(frame: Any) -> bool:
    return frame.type == "task/status" and payload(frame)["status"] == "done"


async def _run_task(stack: Stack, agent: Peer, task_id: str, *, progress: int) -> int:
    """Drive one task through the agent socket; returns the attempt."""
    await stack.dispatch()
    submit = await agent.recv_type("task/submit")
    body = payload(submit)
    assert body["taskId"] == task_id
    attempt = int(body["attempt"])
    ref = await agent.send(TaskAccept(task_id=task_id, attempt=attempt))
    ack = await agent.recv_type("ack", "error")
    assert ack.type == "ack"
    assert payload(ack)["ref"] == ref
    for i in range(progress):
        await agent.send(TaskProgress(task_id=task_id, attempt=attempt, data={"i": i}, message=f"step {i}"))
    ref = await agent.send(TaskResult(task_id=task_id, attempt=attempt, output={"ok": True}))
    ack = await agent.recv_type("ack", "error")
    assert ack.type == "ack", ack
    assert payload(ack) == {"ref": ref}
    return attempt


# --- handshakes -------------------------------------------------------------------------------


async def test_agent_handshake_gets_auth_ok_then_heartbeat_interval(stack: Stack) -> None:
    owner = await stack.person()
    agent_id, token = await stack.agent(owner)
    peer = await stack.open(f"role=agent&agent_id={agent_id}&agent_token={token}")
    first = await peer.recv()
    assert first.type == "auth/ok"
    assert payload(first)["role"] == "agent"
    assert payload(first)["subjectId"] == agent_id
    beat = await peer.recv()
    assert beat.type == "heartbeat"
    assert payload(beat)["interval"] == stack.settings.ws.heartbeat_interval_s
    assert await stack.scheduler.is_online(agent_id)


@pytest.mark.parametrize("which", ["wrong_token", "unknown_agent", "no_token"])
async def test_agent_handshake_refuses_bad_credentials(stack: Stack, which: str) -> None:
    owner = await stack.person()
    agent_id, token = await stack.agent(owner)
    query = {
        "wrong_token": f"role=agent&agent_id={agent_id}&agent_token={token[:-2]}xx",
        "unknown_agent": f"role=agent&agent_id={uuid.uuid4()}&agent_token={token}",
        "no_token": f"role=agent&agent_id={agent_id}",
    }[which]
    peer = await stack.open(query)
    first = await peer.recv()
    assert first.type == "auth/error"
    assert payload(first)["error"] == "unauthorized"
    assert await peer.closed_with() == 1008


async def test_rotated_token_closes_the_socket_and_the_old_token_is_refused(stack: Stack) -> None:
    admin = await stack.person(admin=True)
    agent_id, token = await stack.agent(admin)
    live = await stack.agent_peer(agent_id, token)
    new_token = await stack.rotate_agent_token(admin, agent_id)
    # The control channel reaches the replica holding the socket: closed with 1008.
    assert await live.closed_with() == 1008
    old = await stack.open(f"role=agent&agent_id={agent_id}", {"Authorization": f"Bearer {token}"})
    assert (await old.recv()).type == "auth/error"
    assert await old.closed_with() == 1008
    await stack.agent_peer(agent_id, new_token)


async def test_deleted_agent_is_refused(stack: Stack) -> None:
    admin = await stack.person(admin=True)
    agent_id, token = await stack.agent(admin)
    await stack.delete_agent(admin, agent_id)
    peer = await stack.open(f"role=agent&agent_id={agent_id}&agent_token={token}")
    assert (await peer.recv()).type == "auth/error"
    assert await peer.closed_with() == 1008


async def test_client_handshake_with_header_or_query_token(stack: Stack) -> None:
    person = await stack.person()
    by_header = await stack.client_peer(person)
    assert payload(by_header.seen[0])["subjectId"] == person.id
    by_query = await stack.open(f"role=client&token={person.token}")
    first = await by_query.recv()
    assert first.type == "auth/ok"
    assert payload(first)["role"] == "client"


async def test_client_handshake_refuses_bad_token_and_agent_token(stack: Stack) -> None:
    person = await stack.person()
    agent_id, agent_token = await stack.agent(person)
    for headers in ({"Authorization": "Bearer not-a-jwt"}, {"Authorization": f"Bearer {agent_token}"}, {}):
        peer = await stack.open("role=client", headers)
        first = await peer.recv()
        assert first.type == "auth/error"
        assert payload(first)["code"] == 1002
        assert await peer.closed_with() == 1008
    # A user token as agent credentials is refused too.
    peer = await stack.open(f"role=agent&agent_id={agent_id}", {"Authorization": f"Bearer {person.token}"})
    assert (await peer.recv()).type == "auth/error"


async def test_foreign_origin_is_refused_before_upgrade(stack: Stack) -> None:
    person = await stack.person()
    url = f"{stack.ws_url}?role=client&token={person.token}"
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, origin="https://evil.example.net", open_timeout=WAIT_S)  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    allowed = await connect(url, origin="https://app.example.com", open_timeout=WAIT_S)  # type: ignore[arg-type]
    try:
        assert "auth/ok" in str(await asyncio.wait_for(allowed.recv(), WAIT_S))
    finally:
        await allowed.close()


# --- the task flow ----------------------------------------------------------------------------


async def test_agent_runs_a_task_and_the_watcher_sees_every_event_in_seq_order(stack: Stack) -> None:
    owner = await stack.person()
    agent_id, token = await stack.agent(owner)
    agent = await stack.agent_peer(agent_id, token)
    task_id = await stack.submit(owner, agent_id=agent_id)
    watcher = await stack.client_peer(owner)
    ref = await watcher.send(Subscribe(task_id=task_id, last_seq=0))

    await _run_task(stack, agent, task_id, progress=3)

    frames = await watcher.recv_until(_is_done)
    assert frames[0].type == "ack"
    assert payload(frames[0])["ref"] == ref
    events = frames[1:]
    seqs = [payload(f)["seq"] for f in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    statuses = [payload(f)["status"] for f in events if f.type == "task/status"]
    assert statuses == ["queued", "assigned", "running", "done"]
    # Progress may be coalesced (best effort), but in order and with the last state kept.
    progress = [payload(f)["data"]["i"] for f in events if f.type == "task/progress"]
    assert progress == sorted(set(progress))
    assert progress[-1] == 2

    row = await stack.task_row(task_id)
    assert row.status == "done"
    assert row.result == {"ok": True}


async def test_watcher_reconnecting_with_last_seq_gets_exactly_the_missed_events(stack: Stack) -> None:
    owner = await stack.person()
    agent_id, token = await stack.agent(owner)
    agent = await stack.agent_peer(agent_id, token)
    task_id = await stack.submit(owner, agent_id=agent_id)
    first = await stack.client_peer(owner)
    await first.send(Subscribe(task_id=task_id, last_seq=0))
    await stack.dispatch()
    submit = await agent.recv_type("task/submit")
    attempt = payload(submit)["attempt"]
    before = await first.recv_until(lambda f: f.type == "task/status" and payload(f)["status"] == "assigned")
    last_seq = payload(before[-1])["seq"]
    await first.close()

    # Events the watcher misses while away.
    await agent.send(TaskAccept(task_id=task_id, attempt=attempt))
    await agent.recv_type("ack")
    for i in range(4):
        await agent.send(TaskProgress(task_id=task_id, attempt=attempt, data={"i": i}))
    await agent.send(TaskResult(task_id=task_id, attempt=attempt, output="fine"))
    await agent.recv_type("ack")

    again = await stack.client_peer(owner)
    await again.send(Subscribe(task_id=task_id, last_seq=last_seq))
    frames = await again.recv_until(_is_done)
    assert frames[0].type == "ack"
    seqs = [payload(f)["seq"] for f in frames[1:]]
    # Exactly what the task produced after last_seq (running, progress (possibly coalesced), done).
    produced = [e.seq for e in await stack.scheduler.history(task_id, 0)]
    assert seqs == [seq for seq in produced if seq > last_seq]
    assert seqs == list(range(last_seq + 1, produced[-1] + 1))
    # Nothing more follows: a heartbeat subscribe round trip proves the queue is empty.
    ref = await again.send(Unsubscribe(task_id=task_id))
    nxt = await again.recv()
    assert nxt.type == "ack"
    assert payload(nxt)["ref"] == ref


async def test_users_see_only_their_own_tasks(stack: Stack) -> None:
    alice, bob = await stack.person(), await stack.person()
    agent_id, token = await stack.agent(alice)
    agent = await stack.agent_peer(agent_id, token)
    task_id = await stack.submit(alice, agent_id=agent_id)

    bob_peer = await stack.client_peer(bob)
    ref = await bob_peer.send(Subscribe(task_id=task_id))
    refused = await bob_peer.recv()
    assert refused.type == "error"
    assert payload(refused)["error"] == "not_found"
    assert payload(refused)["ref"] == ref
    ref_random = await bob_peer.send(Subscribe(task_id=str(uuid.uuid4())))
    random_answer = await bob_peer.recv()
    assert {k: v for k, v in payload(random_answer).items() if k != "ref"} == {
        k: v for k, v in payload(refused).items() if k != "ref"
    }
    assert payload(random_answer)["ref"] == ref_random
    await bob_peer.send(Subscribe(all=True))
    assert (await bob_peer.recv()).type == "ack"

    alice_peer = await stack.client_peer(alice)
    await alice_peer.send(Subscribe(all=True))
    assert (await alice_peer.recv()).type == "ack"
    await _run_task(stack, agent, task_id, progress=2)
    alice_frames = await alice_peer.recv_until(_is_done)
    # `all: true` also brings `agent/status` (the public agent); only task events are under test here.
    assert {payload(f)["taskId"] for f in alice_frames if f.type.startswith("task/")} == {task_id}

    # Bob's frames up to the answer to this probe hold none of Alice's events.
    ref = await bob_peer.send(Unsubscribe(all=True))
    before = await bob_peer.recv_until(lambda f: f.type == "ack" and payload(f)["ref"] == ref)
    assert [f.type for f in before if f.type != "agent/status"] == ["ack"]


# --- fencing and duplicates --------------------------------------------------------------------


async def test_stale_attempt_and_foreign_agent_frames_are_refused(stack: Stack) -> None:
    alice, bob = await stack.person(), await stack.person()
    agent_id, token = await stack.agent(alice)
    bob_agent_id, bob_token = await stack.agent(bob)
    agent = await stack.agent_peer(agent_id, token)
    intruder = await stack.agent_peer(bob_agent_id, bob_token)
    task_id = await stack.submit(alice, agent_id=agent_id)
    await stack.dispatch()
    attempt = payload(await agent.recv_type("task/submit"))["attempt"]

    ref = await agent.send(TaskAccept(task_id=task_id, attempt=attempt + 1))
    stale = await agent.recv_type("error", "ack")
    assert payload(stale)["error"] == "stale_attempt"
    assert payload(stale)["ref"] == ref

    ref = await intruder.send(TaskResult(task_id=task_id, attempt=attempt, output="stolen"))
    foreign = await intruder.recv_type("error", "ack")
    assert payload(foreign)["error"] == "not_assigned"
    assert payload(foreign)["ref"] == ref

    row = await stack.task_row(task_id)
    assert row.status in ("queued", "assigned")
    assert row.result is None


async def test_duplicate_result_is_acked_twice_and_recorded_once(stack: Stack) -> None:
    owner = await stack.person()
    agent_id, token = await stack.agent(owner)
    agent = await stack.agent_peer(agent_id, token)
    task_id = await stack.submit(owner, agent_id=agent_id)
    attempt = await _run_task(stack, agent, task_id, progress=0)
    ref = await agent.send(TaskResult(task_id=task_id, attempt=attempt, output={"ok": "second"}))
    again = await agent.recv_type("ack", "error")
    assert again.type == "ack"
    assert payload(again) == {"ref": ref, "duplicate": True}
    row = await stack.task_row(task_id)
    assert row.status == "done"
    assert row.result == {"ok": True}


async def test_heartbeat_reporting_a_task_the_scheduler_did_not_give_gets_a_cancel(stack: Stack) -> None:
    owner = await stack.person()
    agent_id, token = await stack.agent(owner)
    agent = await stack.agent_peer(agent_id, token)
    ghost = str(uuid.uuid4())
    await agent.send(Heartbeat(running=1, capacity=3, running_tasks=[TaskRef(task_id=ghost, attempt=1)]))
    cancel = await agent.recv_type("task/cancel")
    assert payload(cancel)["taskId"] == ghost
    assert payload(cancel)["attempt"] == 1


async def test_control_message_closes_a_revoked_agent_socket(stack: Stack) -> None:
    owner = await stack.person()
    agent_id, token = await stack.agent(owner)
    agent = await stack.agent_peer(agent_id, token)
    await publish_control(stack.redis, stack.settings.redis.prefix, "agent_revoked", agent_id)
    assert await agent.closed_with() == 1008


async def test_token_revoked_closes_that_tokens_client_sockets(stack: Stack) -> None:
    person = await stack.person()
    peer = await stack.client_peer(person)
    other = await stack.person()
    bystander = await stack.client_peer(other)
    import jwt

    jti = jwt.decode(person.token, options={"verify_signature": False})["jti"]
    await publish_control(stack.redis, stack.settings.redis.prefix, "token_revoked", jti)
    assert await peer.closed_with() == 1008
    ref = await bystander.send(Subscribe(all=True))
    assert payload(await bystander.recv())["ref"] == ref


async def test_user_disabled_closes_the_users_sockets(stack: Stack) -> None:
    person = await stack.person()
    peer = await stack.client_peer(person)
    await publish_control(stack.redis, stack.settings.redis.prefix, "user_disabled", person.id)
    assert await peer.closed_with() == 1008


async def test_cancel_of_a_running_task_reaches_the_agent(stack: Stack) -> None:
    from api.tasks.service import TaskService

    owner = await stack.person()
    agent, _agent_id, task_id, attempt = await stack.running_task(owner)
    async with stack.db() as session:
        await TaskService(session, stack.scheduler).cancel(owner.user, task_id)
        await session.commit()
    cancel = payload(await agent.recv_type("task/cancel"))
    assert cancel["taskId"] == task_id
    assert cancel["attempt"] == attempt


async def test_draining_heartbeat_stops_new_work_for_the_agent(stack: Stack) -> None:
    owner = await stack.person()
    agent_id, token = await stack.agent(owner)
    agent = await stack.agent_peer(agent_id, token)
    await agent.send(Heartbeat(running=0, capacity=4, draining=True))

    async def accepting() -> bool:
        online = {p.agent_id: p for p in await stack.scheduler.online_agents()}
        return online[agent_id].accepting

    async with asyncio.timeout(WAIT_S):
        while await accepting():
            await asyncio.sleep(0.02)
    task_id = await stack.submit(owner, agent_id=agent_id)
    assert await stack.dispatch() == 0
    assert (await stack.task_row(task_id)).status == "queued"
    await agent.send(Heartbeat(running=0, capacity=4, draining=False))
    async with asyncio.timeout(WAIT_S):
        while not await accepting():
            await asyncio.sleep(0.02)
    await stack.dispatch()
    assert payload(await agent.recv_type("task/submit"))["taskId"] == task_id
