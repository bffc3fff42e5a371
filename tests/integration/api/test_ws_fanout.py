"""The fan-out's reader on a real Redis pub/sub connection: a burst of events for many watchers is delivered
complete and in order to every watcher, and the reader hands the loop back between bounded runs of deliveries,
so other tasks (agent sessions and their acks) run while a burst is fanned out."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from api.ws.fanout import YIELD_AFTER_DELIVERIES, Fanout
from api.ws.registry import SessionRegistry
from scheduler.keys import Keys

if TYPE_CHECKING:
    import redis.asyncio

    from api.ws.events import AgentStatusEvent, WatchEvent

pytestmark = [pytest.mark.redis]

WATCHERS = 300
EVENTS = 60


class Probe:
    """Counts the loop turns another task gets."""

    def __init__(self) -> None:
        self.turns = 0

    async def run(self) -> None:
        while True:
            self.turns += 1
            await asyncio.sleep(0)


class RecordingWatcher:
    """A watcher that keeps the seqs it got and notes which probe turn each delivery happened in."""

    def __init__(self, probe: Probe, turns: list[int]) -> None:
        self.seqs: list[int] = []
        self._probe = probe
        self._turns = turns

    def deliver(self, event: WatchEvent) -> None:
        self.seqs.append(event.seq)
        self._turns.append(self._probe.turns)

    def deliver_agent_status(self, event: AgentStatusEvent) -> None:
        raise AssertionError("not sent here")

    def request_close(self, code: int, reason: str) -> None:
        raise AssertionError(f"closed: {code} {reason}")


async def test_a_burst_for_many_watchers_is_delivered_in_order_with_the_loop_handed_back(
    redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    registry = SessionRegistry()
    probe = Probe()
    turns: list[int] = []
    watchers = [RecordingWatcher(probe, turns) for _ in range(WATCHERS)]
    for watcher in watchers:
        registry.watch_owner("u1", watcher)
    fanout = Fanout(redis_client, prefix=redis_prefix, registry=registry)
    await fanout.start()
    assert fanout.ready.is_set()
    prober = asyncio.create_task(probe.run())
    try:
        # One pipeline: the messages reach the reader together, most of them in one read buffer.
        pipe = redis_client.pipeline(transaction=False)
        for seq in range(1, EVENTS + 1):
            body = b'{"taskId":"t1","attempt":1,"seq":%d}' % seq
            message = b'{"type":"task/progress","ownerId":"u1","taskId":"t1","seq":%d,"payload":%s}' % (seq, body)
            pipe.publish(f"{Keys(redis_prefix).prefix}:watch:u1", message)
        await pipe.execute()
        async with asyncio.timeout(30):
            while len(turns) < WATCHERS * EVENTS:
                await asyncio.sleep(0.01)
    finally:
        prober.cancel()
        await fanout.stop()
    for watcher in watchers:
        assert watcher.seqs == list(range(1, EVENTS + 1))
    # Between two turns of the probe the reader delivered at most its bound, plus the rest of one message.
    runs: dict[int, int] = {}
    for turn in turns:
        runs[turn] = runs.get(turn, 0) + 1
    assert max(runs.values()) < YIELD_AFTER_DELIVERIES + WATCHERS
