"""One dispatch pass: walk the non-empty queues in the order of their heads and run
`dispatch.lua` for each queue that has a candidate agent. Decides nothing atomically itself:
every candidate list is a hint the script re-checks.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from scheduler.presence import read_online
from scheduler.scripts import as_str

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from scheduler.clock import Clock
    from scheduler.keys import Keys
    from scheduler.scripts import Scripts
    from scheduler.settings import SchedulerSettings
    from scheduler.types import AgentPresence

__all__ = ("Dispatcher",)

logger = logging.getLogger(__name__)

MAX_CANDIDATES = 64
"""Least-loaded candidates passed per call; bounds the script's argument list."""
MAX_ROUNDS = 1000
"""Rounds per pass, so one pass cannot run forever while producers keep up."""


def _candidates(route: Any, free: list[AgentPresence]) -> list[str]:
    if route is None:
        return []
    info = json.loads(route)
    pin: str = info.get("pin", "")
    if pin:
        return [a.agent_id for a in free if a.agent_id == pin]
    need = set(info.get("caps", []))
    fit = [a for a in free if need.issubset(a.capabilities)]
    fit.sort(key=lambda a: a.running)
    return [a.agent_id for a in fit[:MAX_CANDIDATES]]


class Dispatcher:
    def __init__(self, redis: Redis, keys: Keys, scripts: Scripts, settings: SchedulerSettings, clock: Clock) -> None:
        self._redis = redis
        self._keys = keys
        self._scripts = scripts
        self._settings = settings
        self._clock = clock

    async def run_pass(self) -> int:
        """Dispatches until no queue can place its head; returns how many tasks were handed out."""
        total = 0
        for _ in range(MAX_ROUNDS):
            dispatched, more = await self._round()
            total += dispatched
            if not more:
                break
        return total

    async def _round(self) -> tuple[int, bool]:
        """One walk over the registry. Returns (dispatched, whether another round may help)."""
        now = self._clock.now_ms()
        entries: list[Any] = await self._redis.zrange(self._keys.queues(), 0, -1, withscores=True)
        if not entries:
            return 0, False
        agents = await read_online(self._redis, self._keys, now)
        # Operator holds (docs/operations.md "Pause and drain"): a drained agent gets no new task,
        # a paused route is skipped; paused task types are checked per task in dispatch.lua.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.smembers(self._keys.drained_agents())
            pipe.smembers(self._keys.paused_routes())
            drained_raw, paused_raw = await pipe.execute()
        drained, paused = {as_str(a) for a in drained_raw}, {as_str(r) for r in paused_raw}
        free = [a for a in agents if a.accepting and a.running < a.concurrency and a.agent_id not in drained]
        if not free:
            return 0, False
        routes = await self._redis.hmget(self._keys.routes(), [as_str(rid) for rid, _ in entries])
        plan = []
        for (rid, score), route in zip(entries, routes, strict=True):
            candidates = [] if as_str(rid) in paused else _candidates(route, free)
            if candidates:
                plan.append((as_str(rid), float(score), candidates))
        dispatched = 0
        for i, (rid, _score, candidates) in enumerate(plan):
            # Yield once this queue's head sorts after the next placeable queue's head, so tasks
            # leave in global priority/FIFO order across queues.
            stop = plan[i + 1][1] if i + 1 < len(plan) else None
            n, why = await self._scripts.dispatch(
                rid, candidates, now, max_tasks=self._settings.dispatch_batch, stop_score=stop
            )
            dispatched += n
            if n and why in ("yield", "batch"):
                return dispatched, True
        return dispatched, dispatched > 0
