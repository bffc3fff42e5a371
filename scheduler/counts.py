"""Task counts by status for `/metrics`, from what Redis keeps anyway: no row is counted per scrape.

Active tasks are read from the structures that hold them: the queues (`queued`), the delayed set
(`scheduled`) and the deadlines set (`assigned` + `running`; up to `SPLIT_SCAN` of its members are looked
up for the split, beyond that the split is scaled from them). Finished tasks are counters in `P:counts`:
the scripts that finish tasks add to them (one HINCRBY per status per call, `flush_counts` in
`lua/_lib.lua`), the retention purge subtracts the rows it deletes (`forget`). The hash holds `_seeded`
once it was seeded from the database; without it (first start, Redis lost or flushed) the API seeds it
once (`seed`), adding what the scripts counted meanwhile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from redis.asyncio import Redis

    from scheduler.keys import Keys

__all__ = ("SEEDED", "SPLIT_SCAN", "add", "finished_counts", "read", "seed")

SEEDED = "_seeded"
SPLIT_SCAN = 10_000
"""In-flight tasks looked up per read to split `assigned` from `running` (bounds one scrape's work)."""

# Only the first seed applies: two replicas seeding at once must not both add the database's counts.
_SEED = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
for i = 2, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], ARGV[1], '1')
return 1
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _finished(raw: Mapping[Any, Any]) -> dict[str, int]:
    return {_text(k): int(v) for k, v in raw.items() if _text(k) != SEEDED}


async def finished_counts(redis: Redis, keys: Keys) -> tuple[dict[str, int], bool]:
    """The terminal counters as they are, and whether the hash was seeded."""
    raw = await redis.hgetall(keys.task_counts())
    return _finished(raw), any(_text(k) == SEEDED for k in raw)


async def read(redis: Redis, keys: Keys) -> dict[str, int] | None:
    """Tasks per status (active and finished), or None while the terminal counters are not seeded."""
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(keys.task_counts())
    pipe.zcard(keys.delayed())
    pipe.zcard(keys.deadlines())
    pipe.zrange(keys.deadlines(), 0, SPLIT_SCAN - 1)
    pipe.zrange(keys.queues(), 0, -1)
    raw, scheduled, in_flight, sample, routes = await pipe.execute()
    if not any(_text(k) == SEEDED for k in raw):
        return None
    pipe = redis.pipeline(transaction=False)
    for route in routes:
        pipe.zcard(keys.queue(_text(route)))
    for task_id in sample:
        pipe.hget(keys.task(_text(task_id)), "status")
    replies = await pipe.execute()
    queued = sum(int(n) for n in replies[: len(routes)])
    statuses = [_text(s) for s in replies[len(routes) :] if s is not None]
    running = sum(1 for s in statuses if s == "running")
    if statuses and len(statuses) < int(in_flight):
        running = round(running * int(in_flight) / len(statuses))
    counts = _finished(raw)
    counts.update(queued=queued, scheduled=int(scheduled), running=running, assigned=max(0, int(in_flight) - running))
    return counts


async def seed(redis: Redis, keys: Keys, deltas: Mapping[str, int]) -> bool:
    """Add `deltas` to the terminal counters and mark them seeded, unless another seed came first."""
    args: list[str | int] = [SEEDED]
    for status, n in deltas.items():
        args += [status, n]
    return bool(await redis.eval(_SEED, 1, keys.task_counts(), *args))


async def add(redis: Redis, keys: Keys, deltas: Mapping[str, int]) -> None:
    """Add to the terminal counters what no script counted: a task finished in the database alone (+), rows the
    retention purge deleted (-).

    Unseeded (the hash lost) is fine: the seed subtracts what was added before it from the database's count.
    """
    pipe = redis.pipeline(transaction=True)
    for status, n in deltas.items():
        if n:
            pipe.hincrby(keys.task_counts(), status, n)
    await pipe.execute()
