"""Rebuilding Redis from the database: stored attempt and seq carry over, no event is invented."""

from __future__ import annotations

import dataclasses

from scheduler.types import Outcome
from tests.integration.scheduler.conftest import spec


async def test_rebuilt_task_continues_attempt_and_seq(sched, service, make_agent) -> None:
    assert await sched.epoch_present() is False
    rebuilt = dataclasses.replace(spec("t1"), attempt=2, seq=7, status="queued")
    assert await sched.enqueue(rebuilt) is True
    assert await sched.history("t1") == []  # the database already holds events 1..7
    await sched.mark_epoch()
    assert await sched.epoch_present() is True
    a = make_agent("a")
    await a.online()
    await service.run_until_idle()
    (entry,) = await a.inbox()
    assert entry.attempt == 3
    (assigned,) = await sched.history("t1")
    assert (assigned.seq, assigned.status, assigned.attempt) == (8, "assigned", 3)
    assert (await sched.complete("t1", 2, "a")).outcome == Outcome.STALE_ATTEMPT


async def test_rebuilt_scheduled_task_waits_for_its_time(sched, service, make_agent, clock) -> None:
    waiting = dataclasses.replace(spec("t1", run_at_ms=clock.now_ms() + 5_000), seq=1, status="scheduled")
    await sched.enqueue(waiting)
    a = make_agent("a")
    await a.online()
    await service.run_until_idle()
    assert await a.inbox() == []
    clock.advance(5_000)
    await service.run_until_idle()
    assert [e.task_id for e in await a.inbox()] == ["t1"]
