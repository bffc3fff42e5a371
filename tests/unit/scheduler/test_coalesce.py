"""`Coalescer`: calls of one loop turn share one batched call; a failed batch fails each of its callers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from scheduler.coalesce import Coalescer


async def test_calls_of_one_turn_share_one_batch_and_get_their_own_results() -> None:
    batches: list[list[int]] = []

    async def run(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        return [i * 10 for i in items]

    coalescer: Coalescer[int, int] = Coalescer(run, max_batch=3)
    results = await asyncio.gather(*(coalescer.call(i) for i in range(5)))
    assert results == [0, 10, 20, 30, 40]
    assert batches == [[0, 1, 2], [3, 4]]  # one turn, split at max_batch
    assert await coalescer.call(7) == 70  # a later turn: a batch of its own
    assert batches[-1] == [7]


async def test_a_failed_batch_fails_every_caller_and_the_next_batch_runs() -> None:
    calls = 0

    async def run(items: Sequence[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("redis went away")
        return list(items)

    coalescer: Coalescer[str, str] = Coalescer(run)
    outcomes = await asyncio.gather(coalescer.call("a"), coalescer.call("b"), return_exceptions=True)
    assert all(isinstance(o, ConnectionError) for o in outcomes)
    assert await coalescer.call("c") == "c"


async def test_a_submitted_item_joins_the_turns_batch_without_awaiting() -> None:
    batches: list[list[int]] = []

    async def run(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        return [i + 1 for i in items]

    coalescer: Coalescer[int, int] = Coalescer(run)
    answered: list[int] = []
    future = coalescer.submit(1)
    future.add_done_callback(lambda done: answered.append(done.result()))
    assert await coalescer.call(2) == 3
    assert batches == [[1, 2]]  # the submitted item and the awaited call share one batch
    await asyncio.sleep(0)  # done callbacks run on the next turn
    assert answered == [2]


async def test_items_submitted_together_get_one_future_of_their_results_in_turn_order() -> None:
    batches: list[list[int]] = []

    async def run(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        return [i * 2 for i in items]

    coalescer: Coalescer[int, int] = Coalescer(run, max_batch=3)
    alone = coalescer.submit(1)
    together = coalescer.submit_many([2, 3, 4])
    last = coalescer.submit(5)
    assert await together == [4, 6, 8]
    assert (await alone, await last) == (2, 10)
    # Cut at callers' boundaries: the group is never split, so its items stay in one call, in order.
    assert batches == [[1], [2, 3, 4], [5]]


async def test_a_wrong_number_of_results_fails_the_callers_instead_of_leaving_them_waiting() -> None:
    async def run(items: Sequence[int]) -> list[int]:
        return [0]

    coalescer: Coalescer[int, int] = Coalescer(run)
    outcomes = await asyncio.gather(coalescer.submit_many([1, 2]), coalescer.submit(3), return_exceptions=True)
    assert all(isinstance(o, ValueError) for o in outcomes)
