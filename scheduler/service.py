"""The scheduler process' work: a dispatch loop and a sweep loop over one Redis.

Any number of services may run at once; every decision is one script, so none depends on being
the only one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from scheduler.clock import Clock, SystemClock
from scheduler.dispatcher import Dispatcher
from scheduler.keys import Keys
from scheduler.scripts import Scripts
from scheduler.types import SweepResult

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from redis.asyncio import Redis

    from scheduler.settings import SchedulerSettings

__all__ = ("SchedulerService", "heartbeat_ttl_s")

logger = logging.getLogger(__name__)


def heartbeat_ttl_s(settings: SchedulerSettings) -> int:
    """Liveness key TTL: three sweeps, at least 5 s."""
    return max(5, int(settings.sweep_interval_s * 3 + 0.999))


class SchedulerService:
    """Dispatch loop (woken by the wake list, else every sweep interval) plus sweep loop.

    `blocking_redis` (socket_timeout=None) serves the BLPOP on the wake list; without it the
    command client is used with a wait below its socket timeout.
    """

    def __init__(
        self,
        redis: Redis,
        settings: SchedulerSettings,
        clock: Clock | None = None,
        *,
        blocking_redis: Redis | None = None,
    ) -> None:
        self._redis = redis
        self._blocking = blocking_redis or redis
        self._settings = settings
        self._clock: Clock = clock or SystemClock()
        self._keys = Keys(settings.prefix)
        self._scripts = Scripts(redis, self._keys, settings)
        self._dispatcher = Dispatcher(redis, self._keys, self._scripts, settings, self._clock)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self.dispatched = 0
        """Tasks this service handed out (for tests and the status line)."""

    # --- one step each (also the burst mode) ---------------------------------------------------

    async def dispatch_once(self, reads: list[Any] | None = None, *, head: bool = False) -> int:
        n = await self._dispatcher.run_pass(reads, head=head)
        self.dispatched += n
        return n

    async def sweep_once(self) -> SweepResult:
        """Reap expired agents, take back timed-out tasks, release due timers (each until drained)."""
        now = self._clock.now_ms()
        batch = self._settings.sweep_batch
        reaped = SweepResult()
        while True:
            step = await self._scripts.reap_agents(now)
            reaped = SweepResult(
                agents_reaped=reaped.agents_reaped + step.agents_reaped,
                tasks_requeued=reaped.tasks_requeued + step.tasks_requeued,
                tasks_failed=reaped.tasks_failed + step.tasks_failed,
            )
            if step.agents_reaped < batch:
                break
        timed_out = await self._drain(self._scripts.timeouts, now)
        released = await self._drain(self._scripts.release_due, now)
        if reaped.agents_reaped:
            logger.warning(
                "reaped %d expired agents: %d tasks requeued, %d failed",
                reaped.agents_reaped,
                reaped.tasks_requeued,
                reaped.tasks_failed,
            )
        if timed_out:
            logger.warning("took back %d timed-out tasks", timed_out)
        return SweepResult(
            agents_reaped=reaped.agents_reaped,
            tasks_requeued=reaped.tasks_requeued,
            tasks_failed=reaped.tasks_failed,
            timed_out=timed_out,
            released=released,
        )

    async def _drain(self, step: Callable[[int], Awaitable[int]], now: int) -> int:
        total = 0
        while True:
            n = await step(now)
            total += n
            if n < self._settings.sweep_batch:
                return total

    async def run_until_idle(self, *, max_rounds: int = 10_000) -> int:
        """Burst mode: sweep and dispatch until neither changes anything; returns tasks dispatched."""
        total = 0
        for _ in range(max_rounds):
            swept = await self.sweep_once()
            n = await self.dispatch_once()
            total += n
            if n == 0 and swept.changed == 0:
                break
        return total

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping.clear()
        await self._beat()
        for coro in (self._dispatch_loop(), self._sweep_loop()):
            task = asyncio.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        logger.info("scheduler started (prefix=%s, instance=%s)", self._settings.prefix, self._settings.instance)

    async def stop(self) -> None:
        """Lets both loops finish their current step, then returns. Cancels only as a last resort:
        cancelling a task inside a redis-py 8.1 command can wedge the pool's lock (Python 3.11)."""
        self._stopping.set()
        tasks = list(self._tasks)
        if tasks:
            grace = self._settings.sweep_interval_s + 10.0
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(Exception):
            await self._redis.delete(self._keys.scheduler_heartbeat(self._settings.instance))
        logger.info("scheduler stopped (dispatched=%d)", self.dispatched)

    async def _beat(self) -> None:
        key = self._keys.scheduler_heartbeat(self._settings.instance)
        await self._redis.set(key, str(self._clock.now_ms()), ex=heartbeat_ttl_s(self._settings))

    async def dispatch_on_wake(self) -> int:
        """Waits for a wake (or the timeout), then makes a pass; returns tasks dispatched. What the pass needs first
        (`Dispatcher.queue_wake`: the dispatch of the first queue, else the reads) goes behind the BLPOP in one
        round trip; Redis runs it once the BLPOP returns, so it sees what the wake announced."""
        timeout = min(self._settings.sweep_interval_s, 1.0)
        async with self._blocking.pipeline(transaction=False) as pipe:
            pipe.blpop([self._keys.wake()], timeout=timeout)
            head = self._dispatcher.queue_wake(pipe)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        for reply in replies[:1] if head else replies:  # the head dispatch's reply is checked by `run_pass`
            if isinstance(reply, Exception):
                raise reply
        return await self.dispatch_once(replies[1:], head=head)

    async def _dispatch_loop(self) -> None:
        woken = False
        while not self._stopping.is_set():
            try:
                n = await (self.dispatch_on_wake() if woken else self.dispatch_once())
                # Nothing left that a pass could place: anything new (a task, a freed slot) pushes a wake.
                woken = n == 0 or not self._dispatcher.more_pending
            except asyncio.CancelledError:
                raise
            except Exception:
                woken = False
                logger.exception("dispatch pass failed; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._settings.sweep_interval_s)

    async def _sweep_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._beat()
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                # One failed sweep must not stop the next one.
                logger.exception("sweep failed; next one in %.2fs", self._settings.sweep_interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), await self._next_sweep_in())

    async def _next_sweep_in(self) -> float:
        """Seconds until the next sweep: the sweep interval, or sooner when a timer falls due first."""
        interval = self._settings.sweep_interval_s
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.zrange(self._keys.delayed(), 0, 0, withscores=True)
            pipe.zrange(self._keys.deadlines(), 0, 0, withscores=True)
            heads = [float(score) for rows in await pipe.execute() for _member, score in rows]
        except Exception:  # best effort: the interval is always a safe answer
            logger.debug("could not read timer heads", exc_info=True)
            return interval
        if not heads:
            return interval
        due_in = (min(heads) - self._clock.now_ms()) / 1000
        return max(0.005, min(interval, due_in))
