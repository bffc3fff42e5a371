"""`agent/status` frames to watchers subscribed with `all: true`, against a real server, Redis and database.

Online follows the presence lease: a connect is announced at once, a deleted agent's `online: false`
follows at once, a plain disconnect's follows the lease expiry. Admins hear about every agent, users
about public agents and their own. A watcher that subscribes late gets the current state first.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import pytest

from protocol.messages import Subscribe
from tests.integration.api.test_ws_support import WAIT_S, Peer, Person, Stack, open_stack, payload, ws_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from api.settings import ApiSettings

pytestmark = [pytest.mark.redis, pytest.mark.e2e]


@pytest.fixture
async def stack(make_settings: Callable[..., ApiSettings]) -> AsyncIterator[Stack]:
    """A short poll interval, so lease expiry shows within the bounded waits."""
    async for running in open_stack(ws_settings(make_settings, TASKYARD_API_AGENT_STATUS_INTERVAL_S=0.3)):
        yield running


async def _watch_all(stack: Stack, person: Person) -> Peer:
    peer = await stack.client_peer(person)
    ref = await peer.send(Subscribe(all=True))
    assert payload(await peer.recv_type("ack")) == {"ref": ref}
    return peer


async def _status_of(peer: Peer, agent_id: str, *, online: bool) -> dict[str, Any]:
    """The next `agent/status` of `agent_id` saying `online` (others skipped); fails after WAIT_S."""
    while True:
        body = payload(await peer.recv_type("agent/status"))
        if body["agentId"] == agent_id and body["online"] is online:
            return body


async def _private_agent(stack: Stack, owner: Person) -> tuple[str, str]:
    from taskyard.chores import create_agent

    return await create_agent(
        stack.settings,
        name=f"private-{secrets.token_hex(3)}",
        owner_email=owner.email,
        capabilities=(),
        concurrency=2,
        is_public=False,
    )


async def test_admin_hears_an_agent_connect_and_its_deletion(stack: Stack) -> None:
    admin = await stack.person(admin=True)
    owner = await stack.person()
    watcher = await _watch_all(stack, admin)
    agent_id, token = await stack.agent(owner, concurrency=3)
    await stack.agent_peer(agent_id, token)
    assert await _status_of(watcher, agent_id, online=True) == {
        "agentId": agent_id,
        "online": True,
        "running": 0,
        "concurrency": 3,
    }
    await stack.delete_agent(admin, agent_id)  # presence removed at once, socket closed
    gone = await _status_of(watcher, agent_id, online=False)
    assert gone["running"] == 0


async def test_a_disconnect_shows_offline_once_the_lease_expires(stack: Stack) -> None:
    admin = await stack.person(admin=True)
    watcher = await _watch_all(stack, admin)
    agent_id, token = await stack.agent(admin)
    agent = await stack.agent_peer(agent_id, token)
    await _status_of(watcher, agent_id, online=True)
    await agent.close()  # no requeue, no presence removal: the lease runs out (heartbeat timeout)
    await _status_of(watcher, agent_id, online=False)
    assert not await stack.scheduler.is_online(agent_id)


async def test_users_hear_about_public_agents_and_their_own_only(stack: Stack) -> None:
    alice = await stack.person()
    bob = await stack.person()
    alice_watch = await _watch_all(stack, alice)
    bob_watch = await _watch_all(stack, bob)
    private_id, private_token = await _private_agent(stack, alice)
    public_id, public_token = await stack.agent(alice)

    await stack.agent_peer(private_id, private_token)
    await _status_of(alice_watch, private_id, online=True)  # her own, private
    await stack.agent_peer(public_id, public_token)
    await _status_of(alice_watch, public_id, online=True)
    await _status_of(bob_watch, public_id, online=True)
    # The private agent was announced first; Bob's socket got nothing about it before the public one.
    announced = [payload(f)["agentId"] for f in bob_watch.seen if f.type == "agent/status"]
    assert private_id not in announced


async def test_a_late_watcher_gets_the_current_state_first(stack: Stack) -> None:
    admin = await stack.person(admin=True)
    early = await _watch_all(stack, admin)
    agent_id, token = await stack.agent(admin, concurrency=5)
    await stack.agent_peer(agent_id, token)
    await _status_of(early, agent_id, online=True)
    late = await _watch_all(stack, admin)
    body = await _status_of(late, agent_id, online=True)
    assert body["concurrency"] == 5


async def test_no_agent_status_without_all(stack: Stack) -> None:
    owner = await stack.person()
    agent_id, token = await stack.agent(owner)
    single = await stack.client_peer(owner)
    task_id = await stack.submit(owner, agent_id=agent_id)  # pinned: never dispatched in another test
    ref = await single.send(Subscribe(task_id=task_id))
    assert payload(await single.recv_type("ack")) == {"ref": ref}
    everything = await _watch_all(stack, owner)
    await stack.agent_peer(agent_id, token)
    await _status_of(everything, agent_id, online=True)
    # The feed delivers to every watcher in one go, so anything for `single` is queued before this ack.
    ref = await single.send(Subscribe(task_id=task_id))
    before_ack = await single.recv_until(lambda f: f.type == "ack" and payload(f)["ref"] == ref, WAIT_S)
    assert [f.type for f in before_ack if f.type == "agent/status"] == []
