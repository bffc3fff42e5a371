"""`Lane.try_acquire`: a slot taken from a callback, without awaiting, only when `acquire()` would not wait."""

from __future__ import annotations

import asyncio

from api.ws.agent_lanes import FrameLanes, Lane


async def test_a_free_slot_is_taken_at_once_and_a_full_lane_refuses() -> None:
    lane = Lane(2)
    assert lane.try_acquire()
    assert lane.try_acquire()
    assert not lane.try_acquire()
    lane.release()
    assert lane.try_acquire()


async def test_a_slot_freed_for_a_waiter_is_not_taken_over() -> None:
    lane = Lane(1)
    assert lane.try_acquire()
    waiter = asyncio.create_task(lane.acquire())
    await asyncio.sleep(0)  # the waiter queues
    lane.release()
    assert not lane.try_acquire()  # the slot is the waiter's
    assert await waiter
    lane.release()
    assert lane.try_acquire()


def test_progress_has_a_lane_of_its_own_wider_than_the_fast_one() -> None:
    lanes = FrameLanes.of(4)
    assert lanes.progress is not lanes.fast
    slots = 0
    while lanes.progress.try_acquire():
        slots += 1
    assert slots > 4


async def test_only_waiters_still_waiting_hold_a_free_slot_back() -> None:
    # The fast path skips `locked()` only when nobody queues; a queue of cancelled waiters must not block it.
    lane = Lane(2)
    assert lane.try_acquire()
    assert lane.try_acquire()
    waiter = asyncio.create_task(lane.acquire())
    await asyncio.sleep(0)  # the waiter queues
    waiter.cancel()
    lane.release()  # the only waiter is cancelled: the slot stays free
    assert lane.try_acquire()
    assert not lane.try_acquire()
