"""One dispatch pass: walk the non-empty queues in the order of their heads and run
`dispatch.lua` for each queue that has a candidate agent. Decides nothing atomically itself:
every candidate list is a hint the script re-checks.

A round costs one round trip before its script calls (the presence version, the queue registry and
whether any operator hold exists). After a wake, the first script call goes in the wake's own round trip
instead (`queue_wake`), so a lone task's pass is one round trip. Presence is kept
in memory between passes: it is read again when a heartbeat changed it (the `{P}:presence` counter), or
once it is `PRESENCE_MAX_AGE_MS` old (agents that went away without a heartbeat saying so); in between,
the tasks each script call placed are added to the agents' load, so candidates are offered least loaded
first without re-reading slot sets. Slot use is not trusted from it at all: the script counts slots,
and a queue whose candidates it found full makes the pass skip those agents for the other queues.
Route info is fixed by the route id, so it is read once per route and kept.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError

from scheduler.clock import SystemClock
from scheduler.presence import read_online
from scheduler.scripts import as_str, dispatch_reply

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline

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


MAX_ROUTES_KEPT = 4096
"""Route infos kept in memory (cleared past it: re-reading one is a single HMGET)."""


class _Route:
    __slots__ = ("info", "need", "pin")

    def __init__(self, info: str) -> None:
        parsed = json.loads(info)
        self.info = info
        self.pin: str = parsed.get("pin") or ""
        self.need = frozenset(parsed.get("caps") or ())


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
        self._placed: dict[str, int] = {}
        """Tasks placed per agent since presence was read: added to its `running` when ordering candidates."""
        self._routes: dict[str, _Route] = {}
        self.more_pending = False
        """The last pass stopped with tasks it could still place (see `run_pass`)."""

    def queue_reads(self, pipe: Pipeline, *, check_presence: bool = True) -> None:
        """Adds a round's reads to `pipe` (the dispatch loop sends them right behind its wait for a wake, so a
        pass starts without a round trip of its own); hand what they return to `run_pass`."""
        if check_presence:
            pipe.get(self._keys.presence_version())
        pipe.zrange(self._keys.queues(), 0, -1, withscores=True)
        pipe.exists(self._keys.drained_agents(), self._keys.paused_routes())

    def queue_wake(self, pipe: Pipeline) -> bool:
        """Adds what a wake leads to onto `pipe`, which the dispatch loop sends right behind its wait for the wake
        (Redis runs them once the wait returns): while presence in memory is fresh, a dispatch of the registry's
        first queue to its agents, least loaded first (dispatch.lua's head mode: the script picks the queue and
        re-checks each agent, and declines if presence changed or an operator hold exists), so a lone task's pass
        needs no round trip of its own; else the reads of `queue_reads()`. Returns whether it queued the dispatch:
        hand that and the replies to `run_pass`."""
        now = self._clock.now_ms()
        if now - self._agents_at >= PRESENCE_MAX_AGE_MS:
            self.queue_reads(pipe)
            return False
        free = [a for a in self._agents if a.accepting and a.lease_until_ms > now and a.concurrency]
        if not free or len(free) > MAX_CANDIDATES:
            self.queue_reads(pipe)
            return False
        free.sort(key=lambda a: a.running + self._placed.get(a.agent_id, 0))
        version = "" if self._presence_version is None else as_str(self._presence_version)
        # A real clock moves while the wake is awaited: the script reads the server's time when it runs. A fake
        # one (tests) stands still, so its reading is passed as for every other script.
        at = None if isinstance(self._clock, SystemClock) else now
        self._scripts.queue_dispatch_head(
            pipe, [a.agent_id for a in free], version, at, max_tasks=self._settings.dispatch_batch
        )
        return True

    async def run_pass(self, reads: list[Any] | None = None, *, head: bool = False) -> int:
        """Dispatches until no queue can place its head; returns how many tasks were handed out.

        `reads`: what `queue_reads()` returned, read just now (else the first round reads them itself); with
        `head`, the reply of the dispatch `queue_wake()` queued instead, and the pass goes on only if that one did
        not finish it. `more_pending` tells whether it stopped at `MAX_ROUNDS` with work left (else only a wake,
        pushed by whatever enqueues a task or frees a slot, can give it more to do)."""
        full: set[str] = set()
        total = 0
        self.more_pending = False
        if head and reads is not None:
            total, done = self._head_done(reads[0])
            if done:
                return total
            reads = None
        for i in range(MAX_ROUNDS):
            if reads is None:
                async with self._redis.pipeline(transaction=False) as pipe:
                    self.queue_reads(pipe, check_presence=i == 0)
                    reads = await pipe.execute()
            dispatched, more = await self._round(full, reads, check_presence=i == 0)
            reads = None
            total += dispatched
            if not more:
                return total
        self.more_pending = True
        return total

    def _head_done(self, reply: Any) -> tuple[int, bool]:
        """(tasks placed, whether the pass is over) from a head-mode dispatch's reply."""
        if isinstance(reply, NoScriptError):  # a new or flushed server: the ordinary pass loads the script
            return 0, False
        if isinstance(reply, Exception):
            raise reply
        n, why, placed = dispatch_reply(reply)
        for agent_id, k in placed.items():
            self._placed[agent_id] = self._placed.get(agent_id, 0) + k
        # 'empty'/'full' come only when the queue was the only one registered (else 'more'); 'stale', 'batch' and
        # 'yield' leave the rest to an ordinary pass.
        return n, why in ("empty", "full")

    async def _refresh_presence(self, version: bytes | str | None) -> None:
        now = self._clock.now_ms()
        if version == self._presence_version and now - self._agents_at < PRESENCE_MAX_AGE_MS:
            return
        self._agents = await read_online(self._redis, self._keys, now)
        self._agents_at = now
        self._presence_version = version
        self._placed.clear()

    async def _route_infos(self, route_ids: list[str]) -> list[_Route | None]:
        unknown = [rid for rid in route_ids if rid not in self._routes]
        if unknown:
            if len(self._routes) + len(unknown) > MAX_ROUTES_KEPT:
                self._routes.clear()
            for rid, info in zip(unknown, await self._redis.hmget(self._keys.routes(), unknown), strict=True):
                if info is not None:  # else the queue emptied meanwhile
                    self._routes[rid] = _Route(as_str(info))
        return [self._routes.get(rid) for rid in route_ids]

    def _candidates(self, route: _Route | None, free: list[AgentPresence]) -> list[str]:
        if route is None:
            return []
        if route.pin:
            return [a.agent_id for a in free if a.agent_id == route.pin]
        fit = [a for a in free if route.need.issubset(a.capabilities)]
        fit.sort(key=lambda a: a.running + self._placed.get(a.agent_id, 0))
        return [a.agent_id for a in fit[:MAX_CANDIDATES]]

    async def _plan(
        self, entries: list[tuple[bytes | str, float]], free: list[AgentPresence], *, holds: bool
    ) -> list[tuple[str, str, float, list[str]]]:
        """(route id, route info, head score, candidates) of each queue in the registry that some agent in `free`
        may serve, in the registry's order."""
        paused: set[str] = set()
        if holds:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.smembers(self._keys.drained_agents())
                pipe.smembers(self._keys.paused_routes())
                drained_raw, paused_raw = await pipe.execute()
            if drained_raw:
                drained = {as_str(a) for a in drained_raw}
                free = [a for a in free if a.agent_id not in drained]
                if not free:
                    return []
            paused = {as_str(r) for r in paused_raw}
        route_ids = [as_str(rid) for rid, _ in entries]
        plan = []
        for rid, (_, score), route in zip(route_ids, entries, await self._route_infos(route_ids), strict=True):
            candidates = [] if route is None or rid in paused else self._candidates(route, free)
            if route is not None and candidates:
                plan.append((rid, route.info, float(score), candidates))
        return plan

    async def _round(self, full: set[str], replies: list[Any], *, check_presence: bool) -> tuple[int, bool]:
        """One walk over the registry (`replies`: what `queue_reads()` read). Returns (dispatched, whether another
        round may help)."""
        # Operator holds (docs/operations.md "Pause and drain"): a drained agent gets no new task, a paused
        # route is skipped (both read only while one exists); paused task types are checked per task in
        # dispatch.lua.
        if check_presence:
            await self._refresh_presence(replies[0])
        entries, holds = replies[-2], replies[-1]
        if not entries:
            return 0, False
        now = self._clock.now_ms()
        free = [
            a
            for a in self._agents
            if a.accepting and a.lease_until_ms > now and a.concurrency and a.agent_id not in full
        ]
        if not free:
            return 0, False
        plan = await self._plan(entries, free, holds=bool(holds))
        dispatched = 0
        deferred = False
        for i, (rid, info, _score, candidates) in enumerate(plan):
            if full.issuperset(candidates):
                continue
            # Yield once this queue's head sorts after the next placeable queue's head, so tasks
            # leave in global priority/FIFO order across queues.
            stop = plan[i + 1][2] if i + 1 < len(plan) else None
            n, why, placed = await self._scripts.dispatch(
                rid, info, candidates, now, max_tasks=self._settings.dispatch_batch, stop_score=stop
            )
            dispatched += n
            for agent_id, k in placed.items():
                self._placed[agent_id] = self._placed.get(agent_id, 0) + k
            if why == "full":
                full.update(candidates)
            if (why == "yield" and n) or why == "batch":
                return dispatched, True
            deferred = deferred or why == "yield"
        # Every queue was walked: each was emptied or its agents filled, so another round can only help a
        # queue that deferred to one behind it which has since dispatched.
        return dispatched, deferred and dispatched > 0
