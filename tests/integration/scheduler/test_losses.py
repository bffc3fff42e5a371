"""Lost agents do not burn a task's attempts; a separate bound stops a poison task; timed-out agents are avoided;
a reconnected agent's running attempts are reconciled; a closed socket gets a reconnect grace."""

from __future__ import annotations

from scheduler.types import Outcome
from tests.integration.scheduler.conftest import spec


async def _task_field(redis_client, sched, task_id: str, name: str) -> str | None:  # type: ignore[no-untyped-def]
    value = await redis_client.hget(sched.keys.task(task_id), name)
    return value.decode() if value is not None else None


async def test_losses_do_not_count_against_max_attempts(sched, service, make_agent, clock) -> None:
    """Lost twice on a 1-attempt task, then a real failure: the failure is the first counted attempt."""
    await sched.enqueue(spec("t", max_attempts=1))
    for attempt in (1, 2):
        a = make_agent(f"lost{attempt}", lease_s=1)
        await a.online()
        await service.run_until_idle()
        (entry,) = await a.inbox()
        assert entry.attempt == attempt
        await sched.accept("t", attempt, a.agent_id)
        clock.advance(1_001)
        await service.run_until_idle()
    b = make_agent("b")
    await b.online()
    await service.run_until_idle()
    (entry,) = await b.inbox()
    assert entry.attempt == 3
    await sched.accept("t", 3, "b")
    applied = await sched.fail("t", 3, "b", error="boom", message="m", retryable=True, retry_delay_s=None)
    # Retryable, but its one counted attempt is used: failed (losses gave back attempts 1 and 2 only).
    assert applied.status == "failed"
    reasons = [e.reason for e in await sched.history("t") if e.status in ("queued", "failed")]
    assert reasons == [None, "worker_lost", "worker_lost", "boom"]


async def test_a_task_lost_max_losses_times_fails_with_worker_lost(sched, service, make_agent, clock) -> None:
    """The poison bound: default max_losses is 3."""
    assert sched.settings.max_losses == 3
    await sched.enqueue(spec("poison", max_attempts=10))
    for n in range(3):
        a = make_agent(f"victim{n}", lease_s=1)
        await a.online()
        await service.run_until_idle()
        (entry,) = await a.inbox()
        await sched.accept("poison", entry.attempt, a.agent_id)
        clock.advance(1_001)
        await service.run_until_idle()
    final = (await sched.history("poison"))[-1]
    assert (final.status, final.reason, final.attempt) == ("failed", "worker_lost", 3)


async def test_assign_timeout_is_a_loss_and_prefers_another_agent(
    sched, service, make_agent, clock, redis_client
) -> None:
    silent = make_agent("silent", concurrency=4)
    await silent.online()
    await sched.enqueue(spec("t", max_attempts=1))
    await service.run_until_idle()
    assert [e.task_id for e in await silent.inbox()] == ["t"]
    idle = make_agent("idle", concurrency=1)
    await idle.online()
    clock.advance(2_000)  # assign_timeout_s=2: the silent agent never accepted
    await service.run_until_idle()
    # Back in the queue at once and given to the other agent, although the silent one has more room.
    assert await silent.inbox() == []
    (entry,) = await idle.inbox()
    assert entry.attempt == 2
    assert await _task_field(redis_client, sched, "t", "losses") == "1"
    await sched.accept("t", 2, "idle")
    assert (await sched.complete("t", 2, "idle")).outcome == Outcome.OK


async def test_the_avoided_agent_still_gets_the_task_when_nobody_else_has_room(sched, service, make_agent, clock):  # type: ignore[no-untyped-def]
    silent = make_agent("silent")
    await silent.online()
    await sched.enqueue(spec("t", timeout_s=3, max_attempts=2))
    await service.run_until_idle()
    (first,) = await silent.inbox()
    await sched.accept("t", first.attempt, "silent")
    clock.advance(3_000)  # run timeout: counted, and the agent is remembered
    await service.run_until_idle()
    # Past the backoff (at most 200 ms here) but short of the 2 s assign timeout: a backoff that rounds to
    # 0 ms dispatches attempt 2 at once, and a longer advance would then time it out into attempt 3.
    clock.advance(1_000)
    await service.run_until_idle()
    (second,) = await silent.inbox()
    assert second.attempt == 2


async def test_reconcile_requeues_running_attempts_the_agent_does_not_list(
    sched, service, make_agent, redis_client
) -> None:
    a = make_agent("a", concurrency=4)
    await a.online()
    await sched.enqueue_many([spec("kept"), spec("lost"), spec("waiting")])
    await service.run_until_idle()
    entries = {e.task_id: e for e in await a.inbox()}
    await sched.accept("kept", entries["kept"].attempt, "a")
    await sched.accept("lost", entries["lost"].attempt, "a")
    # The restarted process lists only what it runs; "waiting" was never accepted (its submit is redelivered).
    result = await sched.reconcile_agent("a", [("kept", entries["kept"].attempt)])
    assert (result.requeued, result.failed, result.freed) == (1, 0, 0)
    lost = (await sched.history("lost"))[-1]
    assert (lost.status, lost.reason) == ("queued", "agent_restarted")
    assert await _task_field(redis_client, sched, "waiting", "status") == "assigned"
    (presence,) = await sched.online_agents()
    assert presence.running == 2
    # Dispatched again as a new attempt; the old one is fenced.
    await service.run_until_idle()
    again = {e.task_id: e.attempt for e in await a.inbox()}
    assert again == {"lost": entries["lost"].attempt + 1}
    assert (await sched.complete("lost", entries["lost"].attempt, "a")).outcome == Outcome.STALE_ATTEMPT
    # Reconciling again with everything listed changes nothing.
    listed = [("kept", entries["kept"].attempt), ("lost", again["lost"])]
    assert (await sched.reconcile_agent("a", listed)).requeued == 0


async def test_a_closed_socket_starts_a_grace_that_a_reconnect_ends(sched, service, make_agent, clock) -> None:
    a = make_agent("a", lease_s=60)
    await a.online()
    await sched.agent_online(_spec("a"), lease_s=60, session_id="s1")
    await sched.enqueue(spec("t"))
    await service.run_until_idle()
    (entry,) = await a.inbox()
    await sched.accept("t", entry.attempt, "a")
    await sched.agent_closed("a", "s1", grace_s=3)
    clock.advance(2_000)
    await sched.agent_online(_spec("a"), lease_s=60, session_id="s2")  # back within the grace
    clock.advance(5_000)
    await service.run_until_idle()
    assert (await sched.history("t"))[-1].status == "running"
    # The old session closing late (after the new one registered) starts no grace.
    await sched.agent_closed("a", "s1", grace_s=3)
    clock.advance(5_000)
    await service.run_until_idle()
    assert (await sched.history("t"))[-1].status == "running"
    # The live session closes and nobody comes back: requeued once the grace ends, as a loss.
    await sched.agent_closed("a", "s2", grace_s=3)
    clock.advance(2_900)
    await service.run_until_idle()
    assert (await sched.history("t"))[-1].status == "running"
    clock.advance(200)
    await service.run_until_idle()
    last = (await sched.history("t"))[-1]
    assert (last.status, last.reason) == ("queued", "worker_lost")


def _spec(agent_id: str):  # type: ignore[no-untyped-def]
    from scheduler.types import AgentSpec

    return AgentSpec(agent_id, "owner-1", (), 1)


async def test_an_attempt_that_finished_the_task_is_not_stale(sched, service, make_agent) -> None:
    """A reconnecting agent lists outcomes awaiting their ack; cancelling them could lose a result."""
    a = make_agent("a", concurrency=2)
    await a.online()
    await sched.enqueue_many([spec("finished"), spec("taken")])
    await service.run_until_idle()
    entries = {e.task_id: e.attempt for e in await a.inbox()}
    await sched.complete("finished", entries["finished"], "a")
    await sched.agent_offline("a", requeue_now=True)  # "taken" goes back to the queue
    stale = await sched.stale_attempts("a", [("finished", entries["finished"]), ("taken", entries["taken"])])
    assert stale == [("taken", entries["taken"])]
