"""One dispatch pass: walk the non-empty queues in the order of their heads and run
`dispatch.lua` for each queue that has a candidate agent. Decides nothing atomically itself:
every candidate list is a hint the script re-checks.

Presence is kept in memory between passes: it is read again when a heartbeat changed it (the
`{P}:presence` counter, one GET per pass), or once it is `PRESENCE_MAX_AGE_MS` old (agents that went
away without a heartbeat saying so). Slot use is not trusted from it at all: the script counts slots,
and a queue whose candidates it found full makes the pass skip those agents for the other queues.
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
PRESENCE_MAX_AGE_MS = 1000
"""Longest a pass trusts the presence read by an earlier one."""


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
        self._agents: list[AgentPresence] = []
        self._agents_at = -PRESENCE_MAX_AGE_MS
        self._presence_version: bytes | str | None = None
        self.more_pending = False
        """The last pass stopped with tasks it could still place (see `run_pass`)."""

    async def run_pass(self) -> int:
        """Dispatches until no queue can place its head; returns how many tasks were handed out.

        `more_pending` tells whether it stopped at `MAX_ROUNDS` with work left (else only a wake, pushed by
        whatever enqueues a task or frees a slot, can give it more to do)."""
        await self._refresh_presence()
        full: set[str] = set()
        total = 0
        self.more_pending = False
        for _ in range(MAX_ROUNDS):
            dispatched, more = await self._round(full)
            total += dispatched
            if not more:
                return total
        self.more_pending = True
        return total

    async def _refresh_presence(self) -> None:
        now = self._clock.now_ms()
        version = await self._redis.get(self._keys.presence_version())
        if version == self._presence_version and now - self._agents_at < PRESENCE_MAX_AGE_MS:
            return
        self._agents = await read_online(self._redis, self._keys, now)
        self._agents_at = now
        self._presence_version = version

    async def _round(self, full: set[str]) -> tuple[int, bool]:
        """One walk over the registry. Returns (dispatched, whether another round may help)."""
        now = self._clock.now_ms()
        free = [
            a
            for a in self._agents
            if a.accepting and a.lease_until_ms > now and a.concurrency and a.agent_id not in full
        ]
        if not free:
            return 0, False
        # Operator holds (docs/operations.md "Pause and drain") come in the same round trip as the queues:
        # a drained agent gets no new task, a paused route is skipped; paused task types are checked per
        # task in dispatch.lua.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrange(self._keys.queues(), 0, -1, withscores=True)
            pipe.smembers(self._keys.drained_agents())
            pipe.smembers(self._keys.paused_routes())
            entries, drained_raw, paused_raw = await pipe.execute()
        if not entries:
            return 0, False
        if drained_raw:
            drained = {as_str(a) for a in drained_raw}
            free = [a for a in free if a.agent_id not in drained]
            if not free:
                return 0, False
        paused = {as_str(r) for r in paused_raw}
        routes = await self._redis.hmget(self._keys.routes(), [as_str(rid) for rid, _ in entries])
        plan = []
        for (rid, score), route in zip(entries, routes, strict=True):
            candidates = [] if as_str(rid) in paused else _candidates(route, free)
            if candidates:
                plan.append((as_str(rid), float(score), candidates))
        dispatched = 0
        deferred = False
        for i, (rid, _score, candidates) in enumerate(plan):
            if full.issuperset(candidates):
                continue
            # Yield once this queue's head sorts after the next placeable queue's head, so tasks
            # leave in global priority/FIFO order across queues.
            stop = plan[i + 1][1] if i + 1 < len(plan) else None
            n, why = await self._scripts.dispatch(
                rid, candidates, now, max_tasks=self._settings.dispatch_batch, stop_score=stop
            )
            dispatched += n
            if why == "full":
                full.update(candidates)
            if (why == "yield" and n) or why == "batch":
                return dispatched, True
            deferred = deferred or why == "yield"
        # Every queue was walked: each was emptied or its agents filled, so another round can only help a
        # queue that deferred to one behind it which has since dispatched.
        return dispatched, deferred and dispatched > 0
