"""The agent runtime: one connection, heartbeats, task dispatch to handlers, at-least-once reports, drain.

Owns every asyncio task it starts. Talks to the server only through `worker.connection`; what a handler
does is `worker.execution`'s business; unacknowledged frames live in `worker.outbox`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, cast

import msgspec

from protocol.envelope import encode_frame, new_frame_id
from protocol.errors import ErrorCode
from protocol.limits import MAX_HEARTBEAT_TASKS
from protocol.messages import (
    Ack,
    ErrorFrame,
    Heartbeat,
    Message,
    TaskAccept,
    TaskCancel,
    TaskError,
    TaskProgress,
    TaskRef,
    TaskResult,
    TaskStream,
    TaskSubmit,
)
from worker.backoff import Backoff
from worker.connection import ConnectParams, open_connection
from worker.context import ProgressUpdate, TaskContext
from worker.errors import AuthenticationError, ConnectionLostError
from worker.execution import (
    ERROR_WORKER_SHUTDOWN,
    Failed,
    Outcome,
    Succeeded,
    error_name,
    execute,
    truncate_message,
)
from worker.link import Link, cancel_and_wait
from worker.outbox import FrameKind, Outbox, PendingFrame, RecentRefs, TaskKey

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from worker.registry import Registry
    from worker.settings import WorkerSettings
    from worker.streaming import StreamPiece

__all__ = ("EXIT_HUNG", "Agent")

logger = logging.getLogger(__name__)

R = TypeVar("R")

CancelReason = Literal["server", "fenced", "shutdown"]

_FENCED_ERRORS = frozenset(
    {
        ErrorCode.STALE_ATTEMPT.error,
        ErrorCode.NOT_ASSIGNED.error,
        ErrorCode.TASK_NOT_RUNNABLE.error,
        ErrorCode.NOT_FOUND.error,
    }
)
"""The server no longer wants this attempt from us (superseded, reassigned, finished, or gone): drop its
frames and stop running it."""
_RETRY_LATER_ERRORS = frozenset(
    {
        ErrorCode.INTERNAL_ERROR.error,
        ErrorCode.SERVICE_UNAVAILABLE.error,
        ErrorCode.RATE_LIMITED.error,
        ErrorCode.GATEWAY_TIMEOUT.error,
        ErrorCode.UPSTREAM_ERROR.error,
    }
)
"""The server could not apply the frame now: keep it, the resender tries again."""
_STREAM_RESUME_ERRORS = frozenset({ErrorCode.STREAM_GAP.error, ErrorCode.VALIDATION_ERROR.error})
"""A stream piece the server could not place (`details.expectedOffset` says where it is): resend from there."""
_FINISHED_MEMORY = 65536
"""How many finished attempts are remembered to ignore redelivered submits."""
_ACCEPT_FLUSH_S = 1.0
"""How long a handler waits for its `task/accept` to be written before it starts anyway (backpressure)."""
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


@dataclass(eq=False, slots=True)
class _Job:
    submit: TaskSubmit
    task: asyncio.Task[None] | None = None
    ctx: TaskContext[Any] | None = None
    is_running: bool = False
    cancel_reason: CancelReason | None = None

    @property
    def key(self) -> TaskKey:
        return (self.submit.task_id, self.submit.attempt)

    def log_extra(self, agent_id: str) -> dict[str, Any]:
        return {"task_id": self.submit.task_id, "attempt": self.submit.attempt, "agent_id": agent_id}


@dataclass(slots=True)
class _Finished:
    """Recently finished attempts (bounded), so a redelivered submit is not run twice."""

    keys: OrderedDict[TaskKey, None] = field(default_factory=OrderedDict)

    def add(self, key: TaskKey) -> None:
        self.keys[key] = None
        while len(self.keys) > _FINISHED_MEMORY:
            self.keys.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self.keys


class Agent(Generic[R]):
    """One agent: connects, heartbeats, runs up to `settings.concurrency` handlers at once, drains on stop.

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
        self._registry = registry
        self._resources_factory = resources
        self._resources: R = cast("R", None)
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
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._jobs: dict[TaskKey, _Job] = {}
        self._finished = _Finished()
        self._outbox = Outbox()
        self._refs = RecentRefs()
        self._streams: dict[TaskKey, TaskContext[Any]] = {}
        """Attempts that streamed text and whose outcome is not acknowledged yet (resent on reconnect)."""
        self._stream_refs = RecentRefs()
        self._link = Link(
            self._outbox,
            on_frame=self._dispatch,
            heartbeat=self._heartbeat,
            progress_backlog=settings.progress_backlog,
            resend_interval_s=settings.resend_interval_s,
            stream_backlog=settings.stream_backlog,
            resend_first=self._stream_resends,
        )
        self._draining = False
        self._stop_requested = asyncio.Event()
        self._force_stop = asyncio.Event()
        self._jobs_idle = asyncio.Event()
        self._jobs_idle.set()
        self._outbox_empty = asyncio.Event()
        self._outbox_empty.set()
        self.connected = self._link.connected
        """Set while an authenticated connection is up (for tests and probes)."""

    # -- public surface ---------------------------------------------------------------------------------

    @property
    def running(self) -> int:
        """Tasks accepted and running now (never above the concurrency)."""
        return sum(1 for job in self._jobs.values() if job.is_running)

    @property
    def draining(self) -> bool:
        """True once `stop()` was called."""
        return self._draining

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
            self._resources = resources
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
                await self._cancel_jobs(None)

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
            try:
                await self._link.serve(conn)
            except ConnectionLostError as exc:
                logger.warning("connection lost: %s", exc, extra={"agent_id": agent_id})
            except Exception:  # the session boundary: log, reconnect, keep the tasks running
                logger.exception("agent session failed", extra={"agent_id": agent_id})
            await asyncio.sleep(backoff.next_delay_s())

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

    def _heartbeat(self) -> Heartbeat:
        running = [job for job in self._jobs.values() if job.is_running]
        free = 0 if self._draining else max(self._settings.concurrency - len(running), 0)
        refs = {job.key: None for job in running}
        # Outcomes not acknowledged yet count as running: the server keeps their attempts (a reconnect's
        # first heartbeat requeues what it does not list) until the resent outcome lands.
        refs.update((frame.key, None) for frame in self._outbox.all() if frame.kind != "accept")
        return Heartbeat(
            running=len(running),
            capacity=free,
            draining=self._draining,
            running_tasks=[TaskRef(task_id=task_id, attempt=attempt) for task_id, attempt in refs][
                :MAX_HEARTBEAT_TASKS
            ],
        )

    # -- frames from the server -------------------------------------------------------------------------

    def _dispatch(self, payload: Message) -> None:
        if isinstance(payload, TaskSubmit):
            self._on_submit(payload)
        elif isinstance(payload, TaskCancel):
            self._on_cancel(payload)
        elif isinstance(payload, Ack):
            self._on_ack(payload)
        elif isinstance(payload, ErrorFrame):
            self._on_error(payload)
        elif isinstance(payload, Heartbeat):
            if payload.interval is not None:
                self._link.set_heartbeat_interval(payload.interval)
        else:
            logger.debug("ignoring %s frame", type(payload).__name__)

    def _on_submit(self, submit: TaskSubmit) -> None:
        key = (submit.task_id, submit.attempt)
        agent_id = self._settings.agent_id
        extra = {"task_id": submit.task_id, "attempt": submit.attempt, "agent_id": agent_id}
        if key in self._jobs or key in self._finished:
            logger.debug("duplicate task/submit ignored", extra=extra)
            return
        if self._draining:
            # Not accepted: hand it straight back so the server requeues it now, not after a timeout.
            self._finished.add(key)
            self._send_outcome(key, _handed_back())
            return
        for job in list(self._jobs.values()):
            if job.submit.task_id == submit.task_id and job.submit.attempt < submit.attempt:
                # The server moved on to a newer attempt: the old one's frames would be refused anyway.
                self._cancel_job(job, "fenced")
        job = _Job(submit=submit)
        self._jobs[key] = job
        self._jobs_idle.clear()
        job.task = asyncio.create_task(self._run_job(job), name=f"task-{submit.task_id}-{submit.attempt}")
        logger.debug("task received", extra={**extra, "task_type": submit.type})

    def _on_cancel(self, cancel: TaskCancel) -> None:
        key = (cancel.task_id, cancel.attempt)
        self._finished.add(key)  # a submit of this attempt arriving later must not run it
        if not self._outbox.has_terminal(key):
            # An outcome already waiting for its ack stays: only the server's answer settles it (an ack, the
            # partial output of a canceled task, or a refusal that drops it). Dropping it here could leave a
            # task `done` without its result when the first commit was lost with a replica.
            self._outbox.purge(key)
            self._streams.pop(key, None)
            self._note_outbox_change()
        job = self._jobs.get(key)
        if job is not None:
            logger.info("task cancelled by the server", extra=job.log_extra(self._settings.agent_id))
            self._cancel_job(job, "server")

    def _on_ack(self, ack: Ack) -> None:
        acked = self._outbox.ack(ack.ref)
        if acked is not None:
            if acked.kind != "accept":
                self._streams.pop(acked.key, None)  # the outcome is recorded: nothing to resend
            self._note_outbox_change()

    def _on_error(self, error: ErrorFrame) -> None:
        stream_key = self._stream_refs.get(error.ref) if error.ref is not None else None
        if stream_key is not None:
            self._on_stream_refused(stream_key, error)
            return
        pending = self._outbox.get(error.ref) if error.ref is not None else None
        key = pending.key if pending is not None else self._error_key(error)
        log_extra = {"error": error.error, "ref": error.ref}
        if key is not None and error.error in _FENCED_ERRORS:
            self._outbox.purge(key)
            self._streams.pop(key, None)
            self._note_outbox_change()
            self._finished.add(key)
            job = self._jobs.get(key)
            if job is not None:
                self._cancel_job(job, "fenced")
            logger.warning(
                "server refused a frame (%s): dropping the attempt",
                error.error,
                extra={**log_extra, "task_id": key[0], "attempt": key[1], "agent_id": self._settings.agent_id},
            )
        elif pending is not None and error.error not in _RETRY_LATER_ERRORS:
            self._outbox.ack(pending.frame_id)  # resending cannot help
            self._note_outbox_change()
            logger.error("server refused a %s frame: %s", pending.kind, error.message, extra=log_extra)
            if pending.kind == "result":
                # Report the task as failed rather than leave it running on the server until its timeout.
                message = truncate_message(f"the server refused the result: {error.message}")
                self._send_outcome(pending.key, Failed(error_name(error.error), message, False))
        else:
            logger.warning("error frame from the server: %s", error.message, extra=log_extra)

    def _on_stream_refused(self, key: TaskKey, error: ErrorFrame) -> None:
        """A refused stream piece never drops the attempt's result: only its own answer decides that."""
        expected = (error.details or {}).get("expectedOffset")
        ctx = self._streams.get(key)
        if error.error in _STREAM_RESUME_ERRORS and isinstance(expected, int) and ctx is not None:
            logger.info("stream resumed at byte %d", expected, extra={"task_id": key[0], "attempt": key[1]})
            for piece in ctx.stream_pieces(expected):
                self._link.send_stream_nowait(self._stream_frame(key, piece))
        elif error.error in _FENCED_ERRORS - {ErrorCode.TASK_NOT_RUNNABLE.error} and not self._outbox.has_terminal(key):
            # The attempt is no longer ours (like a refused progress frame): stop it.
            self._streams.pop(key, None)
            self._finished.add(key)
            job = self._jobs.get(key)
            if job is not None:
                self._cancel_job(job, "fenced")
        # task_not_runnable: the task ended (a cancel reaches us separately); a late piece is moot.

    def _error_key(self, error: ErrorFrame) -> TaskKey | None:
        if error.ref is not None and (key := self._refs.get(error.ref)) is not None:
            return key
        details = error.details or {}
        task_id, attempt = details.get("taskId"), details.get("attempt")
        if isinstance(task_id, str) and isinstance(attempt, int):
            return (task_id, attempt)
        return None

    # -- running tasks ----------------------------------------------------------------------------------

    async def _run_job(self, job: _Job) -> None:
        outcome: Outcome | None = None
        try:
            async with self._slots:
                if self._draining:
                    outcome = _handed_back()
                    return
                outcome = await self._execute(job)
        except asyncio.CancelledError:
            if job.ctx is not None:
                job.ctx.mark_cancelled()
            if job.cancel_reason is None:
                raise  # torn down with the agent: nobody to report to
            if job.cancel_reason == "shutdown":
                outcome = _handed_back()
        finally:
            self._jobs.pop(job.key, None)
            self._finished.add(job.key)
            if not self._jobs:
                self._jobs_idle.set()
            if job.cancel_reason == "shutdown":
                outcome = _handed_back()  # also when the handler returned early on the cancel
            elif job.cancel_reason == "server" and isinstance(outcome, Succeeded):
                # Canceled by its owner, the handler still returned (partial output): the server keeps it.
                self._send_outcome(job.key, outcome)
                outcome = None
            if outcome is not None and job.cancel_reason in (None, "shutdown"):
                self._send_outcome(job.key, outcome)
            elif not self._outbox.has_terminal(job.key):
                self._streams.pop(job.key, None)
            self._link.heartbeat_now()  # report the freed slot now, not at the next tick

    async def _execute(self, job: _Job) -> Outcome:
        submit = job.submit
        job.is_running = True
        accept_id = self._track(job.key, "accept", TaskAccept(task_id=submit.task_id, attempt=submit.attempt))
        # The server hears `accept` before the work starts (bounded: under backpressure, start anyway).
        await self._link.until_written(accept_id, _ACCEPT_FLUSH_S)
        job.ctx = TaskContext(
            task_id=submit.task_id,
            attempt=submit.attempt,
            task_type=submit.type,
            resources=self._resources,
            sink=lambda update: self._send_progress(job, update),
            loop=asyncio.get_running_loop(),
            timeout_s=float(submit.timeout_seconds),
            stream_sink=lambda piece: self._send_stream(job, piece),
            credentials=submit.credentials,
        )
        logger.debug("task started", extra=job.log_extra(self._settings.agent_id))
        return await execute(self._registry.get(submit.type), msgspec.json.encode(submit.input), job.ctx)

    def _cancel_job(self, job: _Job, reason: CancelReason) -> None:
        if job.cancel_reason is None:
            job.cancel_reason = reason
        if job.ctx is not None:
            job.ctx.mark_cancelled()
        if job.task is not None:
            job.task.cancel()

    async def _cancel_jobs(self, reason: CancelReason | None) -> None:
        tasks = []
        for job in list(self._jobs.values()):
            if reason is not None:
                self._cancel_job(job, reason)
            elif job.task is not None:
                job.task.cancel()
            if job.task is not None:
                tasks.append(job.task)
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- frames to the server ---------------------------------------------------------------------------

    def _send_outcome(self, key: TaskKey, outcome: Outcome) -> None:
        task_id, attempt = key
        message: TaskResult | TaskError
        if isinstance(outcome, Succeeded):
            message = TaskResult(task_id=task_id, attempt=attempt, output=msgspec.Raw(outcome.output_json))
            self._track(key, "result", message)
        else:
            message = TaskError(
                task_id=task_id,
                attempt=attempt,
                error=outcome.error,
                message=outcome.message,
                retryable=outcome.retryable,
                retry_delay_s=outcome.retry_delay_s,
            )
            self._track(key, "error", message)
        logger.debug(
            "task finished: %s",
            "result" if isinstance(outcome, Succeeded) else outcome.error,
            extra={"task_id": task_id, "attempt": attempt, "agent_id": self._settings.agent_id},
        )

    def _track(self, key: TaskKey, kind: FrameKind, message: TaskAccept | TaskResult | TaskError) -> str:
        """Send a frame and keep it in the outbox until the server acknowledges it; returns its id."""
        frame_id = new_frame_id()
        data = encode_frame(message, frame_id=frame_id)
        self._outbox.add(PendingFrame(frame_id=frame_id, key=key, kind=kind, data=data))
        self._refs.add(frame_id, key)
        self._note_outbox_change()
        self._link.send_tracked(frame_id, data)
        return frame_id

    def _send_progress(self, job: _Job, update: ProgressUpdate) -> bool:
        if not self._link.is_up or job.cancel_reason is not None or self._jobs.get(job.key) is not job:
            return False
        frame_id = new_frame_id()
        message = TaskProgress(
            task_id=job.submit.task_id,
            attempt=job.submit.attempt,
            data=msgspec.Raw(update.data_json) if update.data_json is not None else None,
            message=update.message,
        )
        if not self._link.send_progress(encode_frame(message, frame_id=frame_id)):
            return False
        self._refs.add(frame_id, job.key)
        return True

    async def _send_stream(self, job: _Job, piece: StreamPiece) -> None:
        if job.cancel_reason is not None or self._jobs.get(job.key) is not job or job.ctx is None:
            return
        self._streams[job.key] = job.ctx
        await self._link.send_stream(self._stream_frame(job.key, piece))

    def _stream_frame(self, key: TaskKey, piece: StreamPiece) -> bytes:
        frame_id = new_frame_id()
        self._stream_refs.add(frame_id, key)
        message = TaskStream(task_id=key[0], attempt=key[1], offset=piece.offset, delta=piece.delta)
        return encode_frame(message, frame_id=frame_id)

    def _stream_resends(self) -> list[bytes]:
        """Every kept stream from offset 0, for a new connection (the server keeps only what it lacks)."""
        return [self._stream_frame(key, piece) for key, ctx in self._streams.items() for piece in ctx.stream_pieces()]

    def _note_outbox_change(self) -> None:
        if self._outbox:
            self._outbox_empty.clear()
        else:
            self._outbox_empty.set()

    # -- drain ------------------------------------------------------------------------------------------

    async def _drain(self) -> None:
        agent_id = self._settings.agent_id
        self._draining = True
        self._link.heartbeat_now()
        logger.info("draining: %d task(s) running", self.running, extra={"agent_id": agent_id})
        for job in list(self._jobs.values()):
            if not job.is_running:  # waiting for a slot, never accepted: hand back at once
                self._cancel_job(job, "shutdown")
        if not await self._wait_or_forced(self._jobs_idle, self._settings.drain_timeout_s):
            logger.warning("drain timeout: handing back %d task(s)", len(self._jobs), extra={"agent_id": agent_id})
        await self._cancel_jobs("shutdown")
        if not await self._wait_or_forced(self._outbox_empty, self._settings.shutdown_ack_timeout_s):
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


def _handed_back() -> Failed:
    return Failed(ERROR_WORKER_SHUTDOWN, "the worker shut down before the task finished", True, 0.0)
