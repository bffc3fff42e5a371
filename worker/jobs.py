"""The attempts one agent runs: slots, handler execution, and the frames about them both ways.

`Jobs` takes the task frames the agent's link receives (submit, cancel, ack, error), runs each attempt in
a slot through `worker.execution`, and reports it (accept, progress, stream, result/error) with at-least-once
delivery through the outbox. The connection, heartbeats, watchdog and drain order are `worker.agent`'s.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import msgspec

from protocol.envelope import encode_frame, new_frame_id
from protocol.errors import ErrorCode
from protocol.messages import (
    Ack,
    ErrorFrame,
    TaskAccept,
    TaskCancel,
    TaskError,
    TaskProgress,
    TaskResult,
    TaskStream,
    TaskSubmit,
)
from worker.attempts import (
    FENCED_ERRORS,
    RETRY_LATER_ERRORS,
    STREAM_RESUME_ERRORS,
    CancelReason,
    Finished,
    Job,
    handed_back,
)
from worker.context import ProgressUpdate, TaskContext
from worker.execution import (
    Failed,
    Outcome,
    Succeeded,
    error_name,
    execute,
    truncate_message,
)
from worker.outbox import FrameKind, Outbox, PendingFrame, RecentRefs, TaskKey
from worker.slots import Slots

if TYPE_CHECKING:
    from worker.link import Link
    from worker.registry import Registry
    from worker.streaming import StreamPiece

__all__ = ("IMPLIED_ACCEPT_S", "CancelReason", "Jobs")

logger = logging.getLogger(__name__)

_ACCEPT_FLUSH_S = 1.0
"""How long a handler waits for its `task/accept` to be written before it starts anyway (backpressure)."""
IMPLIED_ACCEPT_S = 0.5
"""On a server that takes implied accepts: a task that sent nothing (progress, stream, outcome) this long
after it started sends `task/accept` (well within the server's assign deadline); quicker ones never do."""


class Jobs:
    """Every attempt this agent holds, from `task/submit` until the server acknowledges its outcome."""

    def __init__(self, agent_id: str, registry: Registry[Any], link: Link, outbox: Outbox, slots: int) -> None:
        self._agent_id = agent_id
        self._registry = registry
        self._link = link
        self._outbox = outbox
        self.slots = Slots(slots)
        """Resized to the server's number on each connection (`worker.slots.choose_concurrency`)."""
        self.resources: Any = None
        """What handlers get as `ctx.resources`; set by the agent once its resources are open."""
        self.draining = False
        """Set by the agent's drain: submits are handed back, waiting attempts never start."""
        self._jobs: dict[TaskKey, Job] = {}
        self._finished = Finished()
        self._refs = RecentRefs()
        self._streams: dict[TaskKey, TaskContext[Any]] = {}
        """Attempts that streamed text and whose outcome is not acknowledged yet (resent on reconnect)."""
        self._stream_refs = RecentRefs()
        self.idle = asyncio.Event()
        """Set while no attempt is held."""
        self.idle.set()
        self.outbox_empty = asyncio.Event()
        """Set while every outcome is acknowledged."""
        self.outbox_empty.set()

    @property
    def running(self) -> list[Job]:
        """Attempts accepted and running now (never above the slots)."""
        return [job for job in self._jobs.values() if job.is_running]

    @property
    def held(self) -> int:
        """Attempts held: running, or waiting for a slot."""
        return len(self._jobs)

    def hand_back_waiting(self) -> None:
        """Attempts still waiting for a slot (never accepted) go back to the server at once."""
        for job in list(self._jobs.values()):
            if not job.is_running:
                self._cancel_job(job, "shutdown")

    def on_submit(self, submit: TaskSubmit) -> None:
        key = (submit.task_id, submit.attempt)
        agent_id = self._agent_id
        extra = {"task_id": submit.task_id, "attempt": submit.attempt, "agent_id": agent_id}
        if key in self._jobs or key in self._finished:
            logger.debug("duplicate task/submit ignored", extra=extra)
            return
        if self.draining:
            # Not accepted: hand it straight back so the server requeues it now, not after a timeout.
            self._finished.add(key)
            self._send_outcome(key, handed_back())
            return
        for job in list(self._jobs.values()):
            if job.submit.task_id == submit.task_id and job.submit.attempt < submit.attempt:
                # The server moved on to a newer attempt: the old one's frames would be refused anyway.
                self._cancel_job(job, "fenced")
        job = Job(submit=submit)
        self._jobs[key] = job
        self.idle.clear()
        job.task = asyncio.create_task(self._run_job(job), name=f"task-{submit.task_id}-{submit.attempt}")
        logger.debug("task received", extra={**extra, "task_type": submit.type})

    def on_cancel(self, cancel: TaskCancel) -> None:
        key = (cancel.task_id, cancel.attempt)
        self._finished.add(key)  # a submit of this attempt arriving later must not run it
        if not self._outbox.has_terminal(key):
            # An outcome already waiting for its ack stays: only the server's answer settles it (an ack, the
            # partial output of a canceled task, or a refusal that drops it). Dropping it here could leave a
            # task `done` without its result when the first commit was lost with a replica.
            self._outbox.purge(key)
            self._streams.pop(key, None)
            self.note_outbox_change()
        job = self._jobs.get(key)
        if job is not None:
            logger.info("task cancelled by the server", extra=job.log_extra(self._agent_id))
            self._cancel_job(job, "server")

    def on_ack(self, ack: Ack) -> None:
        acked = self._outbox.ack(ack.ref)
        if acked is not None:
            if acked.kind != "accept":
                self._streams.pop(acked.key, None)  # the outcome is recorded: nothing to resend
            self.note_outbox_change()

    def on_error(self, error: ErrorFrame) -> None:
        stream_key = self._stream_refs.get(error.ref) if error.ref is not None else None
        if stream_key is not None:
            self._on_stream_refused(stream_key, error)
            return
        pending = self._outbox.get(error.ref) if error.ref is not None else None
        key = pending.key if pending is not None else self._error_key(error)
        log_extra = {"error": error.error, "ref": error.ref}
        if key is not None and error.error in FENCED_ERRORS:
            self._outbox.purge(key)
            self._streams.pop(key, None)
            self.note_outbox_change()
            self._finished.add(key)
            job = self._jobs.get(key)
            if job is not None:
                self._cancel_job(job, "fenced")
            logger.warning(
                "server refused a frame (%s): dropping the attempt",
                error.error,
                extra={**log_extra, "task_id": key[0], "attempt": key[1], "agent_id": self._agent_id},
            )
        elif pending is not None and error.error not in RETRY_LATER_ERRORS:
            self._outbox.ack(pending.frame_id)  # resending cannot help
            self.note_outbox_change()
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
        if error.error in STREAM_RESUME_ERRORS and isinstance(expected, int) and ctx is not None:
            logger.info("stream resumed at byte %d", expected, extra={"task_id": key[0], "attempt": key[1]})
            for piece in ctx.stream_pieces(expected):
                self._link.send_stream_nowait(self._stream_frame(key, piece))
        elif error.error in FENCED_ERRORS - {ErrorCode.TASK_NOT_RUNNABLE.error} and not self._outbox.has_terminal(key):
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

    async def _run_job(self, job: Job) -> None:
        outcome: Outcome | None = None
        try:
            async with self.slots:
                if self.draining:
                    outcome = handed_back()
                    return
                outcome = await self._execute(job)
        except asyncio.CancelledError:
            if job.ctx is not None:
                job.ctx.mark_cancelled()
            if job.cancel_reason is None:
                raise  # torn down with the agent: nobody to report to
            if job.cancel_reason == "shutdown":
                outcome = handed_back()
        finally:
            self._stop_accept_timer(job)
            self._jobs.pop(job.key, None)
            self._finished.add(job.key)
            if not self._jobs:
                self.idle.set()
            if job.cancel_reason == "shutdown":
                outcome = handed_back()  # also when the handler returned early on the cancel
            elif job.cancel_reason == "server" and isinstance(outcome, Succeeded):
                # Canceled by its owner, the handler still returned (partial output): the server keeps it.
                self._send_outcome(job.key, outcome)
                outcome = None
            if outcome is not None and job.cancel_reason in (None, "shutdown"):
                self._send_outcome(job.key, outcome)
            elif not self._outbox.has_terminal(job.key):
                self._streams.pop(job.key, None)
            self._slot_freed()

    @staticmethod
    def _stop_accept_timer(job: Job) -> None:
        if job.accept_timer is not None:
            job.accept_timer.cancel()
            job.accept_timer = None
        job.reported = True

    def _slot_freed(self) -> None:
        if not self._link.batch:
            # An older server hears of the freed slot now, not at the next tick; a newer one frees the slot
            # with the outcome itself, so a heartbeat per finished task would be pure cost.
            self._link.heartbeat_now()

    async def _execute(self, job: Job) -> Outcome:
        submit = job.submit
        job.is_running = True
        if self._link.batch:
            # The server applies the accept the first frame of the attempt implies: only a task that stays
            # quiet for a while sends one, so a quick task costs one frame (its result), not two.
            job.accept_timer = asyncio.get_running_loop().call_later(IMPLIED_ACCEPT_S, self._late_accept, job)
        else:
            job.reported = True
            accept_id = self._track(job.key, "accept", TaskAccept(task_id=submit.task_id, attempt=submit.attempt))
            # The server hears `accept` before the work starts (bounded: under backpressure, start anyway).
            await self._link.until_written(accept_id, _ACCEPT_FLUSH_S)
        job.ctx = TaskContext(
            task_id=submit.task_id,
            attempt=submit.attempt,
            task_type=submit.type,
            resources=self.resources,
            sink=lambda update: self._send_progress(job, update),
            loop=asyncio.get_running_loop(),
            timeout_s=float(submit.timeout_seconds),
            stream_sink=lambda piece: self._send_stream(job, piece),
            credentials=submit.credentials,
        )
        if logger.isEnabledFor(logging.DEBUG):  # not even the record's extra dict per task otherwise
            logger.debug("task started", extra=job.log_extra(self._agent_id))
        return await execute(self._registry.get(submit.type), msgspec.json.encode(submit.input), job.ctx)

    def _late_accept(self, job: Job) -> None:
        job.accept_timer = None
        if job.reported or job.cancel_reason is not None or self._jobs.get(job.key) is not job:
            return
        job.reported = True
        self._track(job.key, "accept", TaskAccept(task_id=job.submit.task_id, attempt=job.submit.attempt))

    def _cancel_job(self, job: Job, reason: CancelReason) -> None:
        if job.cancel_reason is None:
            job.cancel_reason = reason
        if job.ctx is not None:
            job.ctx.mark_cancelled()
        if job.task is not None:
            job.task.cancel()

    async def cancel_all(self, reason: CancelReason | None) -> None:
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
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "task finished: %s",
                "result" if isinstance(outcome, Succeeded) else outcome.error,
                extra={"task_id": task_id, "attempt": attempt, "agent_id": self._agent_id},
            )

    def _track(self, key: TaskKey, kind: FrameKind, message: TaskAccept | TaskResult | TaskError) -> str:
        """Send a frame and keep it in the outbox until the server acknowledges it; returns its id."""
        frame_id = new_frame_id()
        data = encode_frame(message, frame_id=frame_id)
        self._outbox.add(PendingFrame(frame_id=frame_id, key=key, kind=kind, data=data))
        self._refs.add(frame_id, key)
        self.note_outbox_change()
        self._link.send_tracked(frame_id, data)
        return frame_id

    def _send_progress(self, job: Job, update: ProgressUpdate) -> bool:
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
        job.reported = True
        self._refs.add(frame_id, job.key)
        return True

    async def _send_stream(self, job: Job, piece: StreamPiece) -> None:
        if job.cancel_reason is not None or self._jobs.get(job.key) is not job or job.ctx is None:
            return
        self._streams[job.key] = job.ctx
        job.reported = True
        await self._link.send_stream(self._stream_frame(job.key, piece))

    def _stream_frame(self, key: TaskKey, piece: StreamPiece) -> bytes:
        frame_id = new_frame_id()
        self._stream_refs.add(frame_id, key)
        message = TaskStream(task_id=key[0], attempt=key[1], offset=piece.offset, delta=piece.delta)
        return encode_frame(message, frame_id=frame_id)

    def stream_resends(self) -> list[bytes]:
        """Every kept stream from offset 0, for a new connection (the server keeps only what it lacks)."""
        return [self._stream_frame(key, piece) for key, ctx in self._streams.items() for piece in ctx.stream_pieces()]

    def note_outbox_change(self) -> None:
        if self._outbox:
            self.outbox_empty.clear()
        else:
            self.outbox_empty.set()
