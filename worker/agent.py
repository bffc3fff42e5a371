"""The agent runtime: one connection (reconnected with backoff), heartbeats, the watchdog, and the drain.

Owns every asyncio task it starts. Talks to the server only through `worker.connection` and `worker.link`;
the attempts it runs, and the frames about them, are `worker.jobs`'s; unacknowledged frames live in
`worker.outbox`. How many run at once is the server's record of the agent (`worker.slots`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Generic, TypeVar, cast

from protocol.limits import MAX_HEARTBEAT_TASKS
from protocol.messages import Ack, ErrorFrame, Heartbeat, Message, TaskCancel, TaskRef, TaskSubmit
from worker.backoff import Backoff
from worker.connection import ConnectParams, open_connection
from worker.errors import AuthenticationError, ConnectionLostError
from worker.jobs import IMPLIED_ACCEPT_S, Jobs
from worker.link import Link, cancel_and_wait
from worker.outbox import Outbox
from worker.slots import choose_concurrency

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from worker.registry import Registry
    from worker.settings import WorkerSettings

__all__ = ("EXIT_HUNG", "IMPLIED_ACCEPT_S", "Agent")

logger = logging.getLogger(__name__)

R = TypeVar("R")

EXIT_HUNG = 3
"""Exit code of a worker its watchdog stopped: the link showed no sign of life past the bound."""
_WATCHDOG_TICK_S = 1.0
_WATCHDOG_HEARTBEATS = 3
"""The watchdog bound is at least this many of the server's heartbeat intervals."""


def _exit_hung() -> None:
    """Leave at once: the event loop's tasks are what is stuck, so a clean shutdown could hang too."""
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(EXIT_HUNG)


class Agent(Generic[R]):
    """One agent: connects, heartbeats, runs as many handlers at once as the server allows, drains on stop.

    The number of slots is the server's record of this agent (`auth/ok` `concurrency`), capped by
    `settings.concurrency` when set; a server that does not send it leaves `settings.concurrency` (default 16).

    Run it with `await agent.run()`; call `agent.stop()` (e.g. from a SIGTERM handler) to drain: no new work,
    running tasks get `drain_timeout_s` to finish, the rest are cancelled and handed back with a retryable
    `task/error` `worker_shutdown`. A second `stop()` skips the waiting.

    Args:
        settings: the worker settings.
        registry: the handlers.
        resources: a factory for an async context manager whose value handlers get as `ctx.resources`;
            entered once around the whole run. None gives `ctx.resources = None`.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        registry: Registry[R],
        *,
        resources: Callable[[], AbstractAsyncContextManager[R]] | None = None,
        on_hang: Callable[[], None] = _exit_hung,
    ) -> None:
        """`on_hang`: what the watchdog does, on its own thread, when the link is silent past its bound
        (default: exit the process with `EXIT_HUNG`, so the supervisor restarts the worker)."""
        self._settings = settings
        self._on_hang = on_hang
        self._resources_factory = resources
        self._params = ConnectParams(
            url=settings.url,
            agent_id=settings.agent_id,
            agent_token=settings.agent_token,
            token_in_query=settings.token_in_query,
            open_timeout_s=settings.open_timeout_s,
            ping_interval_s=settings.ping_interval_s,
            ping_timeout_s=settings.ping_timeout_s,
            use_env_proxy=settings.use_env_proxy,
        )
        self._outbox = Outbox()
        self._link = Link(
            self._outbox,
            on_frame=self._dispatch,
            heartbeat=self._heartbeat,
            progress_backlog=settings.progress_backlog,
            resend_interval_s=settings.resend_interval_s,
            stream_backlog=settings.stream_backlog,
            resend_first=self._stream_resends,
        )
        self._concurrency = choose_concurrency(None, settings.concurrency)
        self._concurrency_logged: tuple[int, str] | None = None
        self._jobs = Jobs(settings.agent_id, registry, self._link, self._outbox, self._concurrency[0])
        self._stop_requested = asyncio.Event()
        self._force_stop = asyncio.Event()
        self.connected = self._link.connected
        """Set while an authenticated connection is up (for tests and probes)."""

    # -- public surface ---------------------------------------------------------------------------------

    @property
    def running(self) -> int:
        """Tasks accepted and running now (never above the concurrency)."""
        return len(self._jobs.running)

    @property
    def concurrency(self) -> int:
        """Tasks run at once now: the server's record (capped by the local setting), or the local setting."""
        return self._jobs.slots.limit

    @property
    def draining(self) -> bool:
        """True once `stop()` was called."""
        return self._jobs.draining

    def stop(self) -> None:
        """Ask the agent to drain and return from `run()`; a second call skips the drain waits."""
        if self._stop_requested.is_set():
            self._force_stop.set()
        self._stop_requested.set()

    async def run(self) -> None:
        """Connect (and reconnect) and serve tasks until `stop()` completes the drain.

        Raises:
            AuthenticationError: the server refused the credentials; the agent does not retry them.
        """
        async with self._open_resources() as resources:
            self._jobs.resources = resources
            connection_loop = asyncio.create_task(self._connection_loop(), name="agent-connection")
            stop_wait = asyncio.create_task(self._stop_requested.wait(), name="agent-stop-wait")
            watchdog_stop = threading.Event()
            if self._settings.watchdog_s > 0:
                threading.Thread(
                    target=self._watchdog, args=(watchdog_stop,), name="agent-watchdog", daemon=True
                ).start()
            try:
                await asyncio.wait({connection_loop, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if connection_loop.done():
                    connection_loop.result()  # an AuthenticationError ends the run here
                await self._drain()
            finally:
                await cancel_and_wait(stop_wait, connection_loop)
                watchdog_stop.set()
                await self._jobs.cancel_all(None)

    # -- connection lifecycle ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _open_resources(self) -> AsyncIterator[R]:
        if self._resources_factory is None:
            yield cast("R", None)
            return
        async with self._resources_factory() as resources:
            yield resources

    async def _connection_loop(self) -> None:
        backoff = Backoff(base_s=self._settings.backoff_base_s, max_s=self._settings.backoff_max_s)
        agent_id = self._settings.agent_id
        while True:
            self._link.note_alive()
            try:
                conn = await open_connection(self._params)
            except AuthenticationError as exc:
                logger.error("agent credentials refused (%s): %s; not retrying", exc.error, exc.message)
                raise
            except ConnectionLostError as exc:
                delay_s = backoff.next_delay_s()
                logger.warning("cannot connect (%s); retrying in %.2f s", exc, delay_s, extra={"agent_id": agent_id})
                await asyncio.sleep(delay_s)
                continue
            backoff.reset()
            logger.info("agent connected", extra={"agent_id": agent_id, "session_id": conn.auth.session_id})
            self._follow_concurrency(conn.auth.concurrency)
            try:
                await self._link.serve(conn)
            except ConnectionLostError as exc:
                logger.warning("connection lost: %s", exc, extra={"agent_id": agent_id})
            except Exception:  # the session boundary: log, reconnect, keep the tasks running
                logger.exception("agent session failed", extra={"agent_id": agent_id})
            await asyncio.sleep(backoff.next_delay_s())

    def _follow_concurrency(self, server: int | None) -> None:
        """Size the slots by this connection's `auth/ok`; say so once per change of the number or its reason."""
        chosen = choose_concurrency(server, self._settings.concurrency)
        self._jobs.slots.resize(chosen[0])
        if chosen != self._concurrency_logged:
            level = logging.WARNING if server is not None and chosen[0] < server else logging.INFO
            # Below the server's record, tasks the server sends past the cap wait here and may be taken back.
            logger.log(level, "concurrency %d (%s)", *chosen, extra={"agent_id": self._settings.agent_id})
            self._concurrency_logged = chosen
        self._concurrency = chosen

    def _watchdog(self, stop: threading.Event) -> None:
        """Call `on_hang` when the link shows no sign of life past the bound; runs on its own thread.

        Alive means a frame from the server (it sends heartbeats) or a connection attempt; a hung
        cancellation, a stuck socket or a blocked event loop shows neither. A thread, so that a loop
        that no longer runs anything is caught too. Off when `watchdog_s` is 0.
        """
        while not stop.wait(_WATCHDOG_TICK_S):
            bound_s = max(self._settings.watchdog_s, _WATCHDOG_HEARTBEATS * self._link.heartbeat_interval_s)
            silent_s = time.monotonic() - self._link.alive_at
            if silent_s > bound_s:
                logger.critical(
                    "watchdog: no frame from the server and no connection attempt for %.0f s (bound %.0f s): "
                    "the link is hung; exiting with code %d so the supervisor restarts the worker",
                    silent_s,
                    bound_s,
                    EXIT_HUNG,
                    extra={"agent_id": self._settings.agent_id},
                )
                self._on_hang()
                return

    def _stream_resends(self) -> list[bytes]:
        return self._jobs.stream_resends()

    def _heartbeat(self) -> Heartbeat:
        running = self._jobs.running
        free = 0 if self._jobs.draining else max(self._jobs.slots.limit - len(running), 0)
        refs = {job.key: None for job in running}
        # Outcomes not acknowledged yet count as running: the server keeps their attempts (a reconnect's
        # first heartbeat requeues what it does not list) until the resent outcome lands.
        refs.update((frame.key, None) for frame in self._outbox.all() if frame.kind != "accept")
        return Heartbeat(
            running=len(running),
            capacity=free,
            draining=self._jobs.draining,
            running_tasks=[TaskRef(task_id=task_id, attempt=attempt) for task_id, attempt in refs][
                :MAX_HEARTBEAT_TASKS
            ],
        )

    def _dispatch(self, payload: Message) -> None:
        if isinstance(payload, TaskSubmit):
            self._jobs.on_submit(payload)
        elif isinstance(payload, TaskCancel):
            self._jobs.on_cancel(payload)
        elif isinstance(payload, Ack):
            self._jobs.on_ack(payload)
        elif isinstance(payload, ErrorFrame):
            self._jobs.on_error(payload)
        elif isinstance(payload, Heartbeat):
            if payload.interval is not None:
                self._link.set_heartbeat_interval(payload.interval)
        else:
            logger.debug("ignoring %s frame", type(payload).__name__)

    # -- drain ------------------------------------------------------------------------------------------

    async def _drain(self) -> None:
        agent_id = self._settings.agent_id
        self._jobs.draining = True
        self._link.heartbeat_now()
        logger.info("draining: %d task(s) running", self.running, extra={"agent_id": agent_id})
        self._jobs.hand_back_waiting()
        if not await self._wait_or_forced(self._jobs.idle, self._settings.drain_timeout_s):
            logger.warning("drain timeout: handing back %d task(s)", self._jobs.held, extra={"agent_id": agent_id})
        await self._jobs.cancel_all("shutdown")
        if not await self._wait_or_forced(self._jobs.outbox_empty, self._settings.shutdown_ack_timeout_s):
            logger.warning("stopping with %d unacknowledged frame(s)", len(self._outbox), extra={"agent_id": agent_id})
        logger.info("drained", extra={"agent_id": agent_id})

    async def _wait_or_forced(self, event: asyncio.Event, timeout_s: float) -> bool:
        """Wait for `event` up to `timeout_s`, or less if a second `stop()` forces; True when it was set."""
        waiters = [asyncio.create_task(event.wait()), asyncio.create_task(self._force_stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(*waiters)
        return event.is_set()
