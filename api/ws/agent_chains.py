"""An agent's task frames in arrival order per task, side by side across tasks, with a bounded backlog.

The base of `AgentSession` (api/ws/agent_session.py), which reads frames and hands task frames here
(`_take`); its `__init__` sets the state declared below. A task with a frame in flight queues its later
frames behind it, and one handler task drains that queue (no task per frame). A progress frame whose task
is idle joins the turn's batched script call and is answered in a callback, without any task.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any

from api.ws.agent_frames import AgentFrames, progress_json
from api.ws.agent_lanes import TRANSIENT
from protocol.errors import ErrorCode
from protocol.messages import ErrorFrame, TaskAccept, TaskError, TaskProgress, TaskResult, TaskStream

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from api.ws.agent_lanes import Lane
    from protocol.envelope import Frame
    from scheduler.types import Applied

__all__ = ("MAX_PENDING_BYTES", "MAX_PENDING_FRAMES", "UNAVAILABLE", "AgentFrameChains")

logger = logging.getLogger("api.ws.agent_session")  # the session's own logger name, as before the split

MAX_PENDING_FRAMES = 1000
"""Task frames of one socket read but not yet handled; past it (or the byte cap) the reader waits."""
MAX_PENDING_BYTES = 16 * 1024 * 1024
"""Bytes of those frames; with the count it bounds what one agent can make the server hold."""
UNAVAILABLE = "temporarily unavailable, resend later"
ProgressFrame = tuple[str, int, str, bytes]
"""What the scheduler's progress call takes per frame: task id, attempt, agent id, payload JSON."""
MAX_GROUP = 200
"""Progress items per group call (as many as the scheduler's batched call takes from single frames): a batch frame
holds up to 1,000 items, and one script call over all of them would hold Redis for every other client meanwhile."""


class AgentFrameChains(AgentFrames):
    """Per-task chains of an agent's task frames, and the reader's backlog bound over them."""

    _fast: asyncio.Semaphore
    _commits: asyncio.Semaphore
    _progress_lane: Lane
    _chains: dict[str, deque[_Job]]
    _runners: set[asyncio.Task[None]]
    _pending: int
    _pending_bytes: int
    _wound_down: bool
    _room: asyncio.Event
    _backlogged: bool
    _grouped: list[tuple[str, _Job, ProgressFrame]] | None
    """While a batch frame is routed (or a group's answers handled): progress items gathered for one group call."""

    def _has_room(self) -> bool:
        return self._pending < MAX_PENDING_FRAMES and self._pending_bytes < MAX_PENDING_BYTES

    def _take(self, frame: Frame, size: int) -> bool:
        """Queue a task frame on its task's chain, without awaiting; False for any other frame."""
        payload = frame.payload
        if isinstance(payload, TaskProgress):
            # Coalesced at arrival, so a progress flood makes no backlog.
            if self._gate.admit(payload, asyncio.get_running_loop().time()):
                self._enqueue(payload.task_id, self._progress_job(frame.id, payload, size))
        elif isinstance(payload, TaskStream):
            # Fenced like progress but never through the gate: every piece counts.
            run = partial(self._apply_stream, frame.id, payload)
            self._enqueue(payload.task_id, _Job(frame.type, frame.id, size, self._fast, run))
        elif isinstance(payload, TaskAccept):
            run = partial(self._on_accept, frame.id, payload)
            self._enqueue(payload.task_id, _Job(frame.type, frame.id, size, self._fast, run))
        elif isinstance(payload, TaskResult):
            self._release_held(payload.task_id, payload.attempt)
            run = partial(self._on_result, frame.id, payload)
            self._enqueue(payload.task_id, _Job(frame.type, frame.id, size, self._commits, run))
        elif isinstance(payload, TaskError):
            self._release_held(payload.task_id, payload.attempt)
            run = partial(self._on_error, frame.id, payload)
            self._enqueue(payload.task_id, _Job(frame.type, frame.id, size, self._commits, run))
        else:
            return False
        return True

    async def _wait_for_room(self) -> None:
        """The reader waits while the backlog of this socket's frames is at its cap."""
        try:
            while not self._has_room():
                self._backlogged = True
                self._room.clear()
                await self._room.wait()
        finally:
            self._backlogged = False

    def _progress_job(self, ref: str | None, progress: TaskProgress, size: int) -> _Job:
        # No handler made up front (`_work` makes it): most progress frames never need one (`_start`).
        return _Job("task/progress", ref, size, self._progress_lane, None, progress=progress)

    def _enqueue(self, task_id: str, job: _Job) -> None:
        """Run `job` after the frames of its task before it: now if none is in flight, else behind them.

        The reader reads on while frames wait (so an accept is not stuck behind commits); it only waits
        itself when the backlog is at its cap.
        """
        self._pending += 1
        self._pending_bytes += job.size
        waiting = self._chains.get(task_id)
        if waiting is not None:
            waiting.append(job)
            return
        self._chains[task_id] = deque()
        self._start(task_id, job)

    def _start(self, task_id: str, job: _Job) -> None:
        """Start the task's next frame. A progress frame with a free slot joins the turn's batched script
        call and is answered in a callback (while a batch frame is routed, its progress items join as one
        group: one future and one callback for all); any other frame gets a handler that also runs the ones
        queued behind it (one task per busy task id, not per frame)."""
        progress = job.progress
        if progress is not None and self._progress_lane.try_acquire():
            if self._grouped is not None:
                self._grouped.append(
                    (task_id, job, (progress.task_id, progress.attempt, self.agent_id, progress_json(progress)))
                )
                return
            future = self._scheduler.progress_soon(
                progress.task_id, progress.attempt, self.agent_id, progress_json(progress)
            )
            future.add_done_callback(partial(self._progress_done, task_id, job))
            return
        runner = asyncio.create_task(self._drain(task_id, job))
        self._runners.add(runner)
        runner.add_done_callback(self._runners.discard)

    def _send_group(self) -> None:
        """Hand the gathered progress items to the scheduler as one group and stop gathering (before any await:
        a gathered item holds its task's chain and its share of the backlog until it is sent)."""
        gathered, self._grouped = self._grouped, None
        if not gathered:
            return
        for start in range(0, len(gathered), MAX_GROUP):
            group = gathered[start : start + MAX_GROUP]
            frames = [frame for _, _, frame in group]
            self._scheduler.progress_many(frames).add_done_callback(partial(self._group_done, group))

    def _group_done(self, group: list[tuple[str, _Job, ProgressFrame]], future: asyncio.Future[list[Applied]]) -> None:
        """A group's answers, item by item as `_progress_done` gives them; their tasks' next progress frames
        (if idle otherwise) are sent as a group again."""
        self._grouped = []
        try:
            exc = None if future.cancelled() else future.exception()
            if future.cancelled() or exc is not None:
                for task_id, job, _ in group:
                    self._progress_answered(task_id, job, None, exc)
            else:
                for (task_id, job, _), applied in zip(group, future.result(), strict=True):
                    self._progress_answered(task_id, job, applied, None)
        finally:
            self._send_group()

    def _progress_done(self, task_id: str, job: _Job, future: asyncio.Future[Applied]) -> None:
        """A progress frame applied from a callback: what its handler would do, then the task's next frame."""
        if future.cancelled():
            self._progress_answered(task_id, job, None, None)
        else:
            exc = future.exception()
            self._progress_answered(task_id, job, future.result() if exc is None else None, exc)

    def _progress_answered(self, task_id: str, job: _Job, applied: Applied | None, exc: BaseException | None) -> None:
        """A refusal (or the storage error's answer) goes ahead of the task's next frame, as a handler would send it;
        no answer and no exception: cancelled (the session is closing)."""
        self._progress_lane.release()
        progress = job.progress
        answer: ErrorFrame | None = None
        if progress is not None:
            if applied is not None:
                answer = self._progress_applied(job.ref, progress, applied)
            elif isinstance(exc, TRANSIENT):
                logger.warning(
                    "frame task/progress not applied (storage error)",
                    extra=self.log_context(),
                    exc_info=exc,
                )
                answer = ErrorFrame.of(ErrorCode.SERVICE_UNAVAILABLE, UNAVAILABLE, ref=job.ref)
            elif exc is not None:
                self._fail(exc)
        self._finished(job)
        waiting = self._chains.get(task_id)
        if waiting is None:
            return
        if answer is not None:
            self._pending += 1
            waiting.appendleft(_Job("error", job.ref, 0, None, partial(self.conn.send, answer)))
        if not waiting or self._wound_down:
            del self._chains[task_id]
        else:
            self._start(task_id, waiting.popleft())

    async def _drain(self, task_id: str, job: _Job) -> None:
        """Handle `job`, then the frames of its task queued behind it, until none is left."""
        try:
            while True:
                try:
                    if job.lane is None:
                        await self._guarded(job.frame_type, job.ref, self._work(job))
                    else:
                        async with job.lane:
                            await self._guarded(job.frame_type, job.ref, self._work(job))
                except Exception as exc:  # ends the session, as the reader's would
                    self._fail(exc)
                self._finished(job)
                waiting = self._chains.get(task_id)
                if not waiting:
                    return
                job = waiting.popleft()
        finally:
            # Emptied, or cancelled at close (what still waited is dropped with the session).
            self._chains.pop(task_id, None)

    def _work(self, job: _Job) -> Coroutine[Any, Any, None]:
        if job.run is not None:
            return job.run()
        assert job.progress is not None  # a job without a handler is a progress frame's
        return self._apply_progress(job.ref, job.progress)

    def _finished(self, job: _Job) -> None:
        self._pending -= 1
        self._pending_bytes -= job.size
        self._room.set()

    async def _guarded(self, frame_type: str, ref: str | None, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except TRANSIENT:
            # Nothing was acked: the agent resends results and errors; progress is best effort.
            logger.warning("frame %s not applied (storage error)", frame_type, extra=self.log_context(), exc_info=True)
            await self.conn.send(ErrorFrame.of(ErrorCode.SERVICE_UNAVAILABLE, UNAVAILABLE, ref=ref))

    async def _flush_progress(self, now: float) -> None:
        """Hand held-back progress whose window opened to its task's chain."""
        for held in self._gate.due(now):
            if not self._has_room():
                await self._wait_for_room()
            self._enqueue(held.task_id, self._progress_job(None, held, 0))

    def _release_held(self, task_id: str, attempt: int) -> None:
        """On an outcome's arrival: its attempt's held-back progress joins the task's chain ahead of it.

        Taken from the gate here, in arrival order, so a later window opening cannot chain it behind the
        outcome (where it would be refused as `task_not_runnable`).
        """
        held = self._gate.take(task_id, attempt)
        if held is not None:
            self._enqueue(task_id, self._progress_job(None, held, 0))


class _Job:
    """One task frame waiting for its turn: its handler (`run`, started inside `lane`) and what answers it."""

    __slots__ = ("frame_type", "lane", "progress", "ref", "run", "size")

    def __init__(
        self,
        frame_type: str,
        ref: str | None,
        size: int,
        lane: asyncio.Semaphore | None,
        run: Callable[[], Coroutine[Any, Any, None]] | None,
        *,
        progress: TaskProgress | None = None,
    ) -> None:
        self.frame_type = frame_type
        self.ref = ref
        self.size = size
        """Its share of the frame's characters (the backlog's byte bound)."""
        self.lane = lane
        self.run = run
        """The handler; None for a progress frame (`AgentFrameChains._work` makes its handler when needed)."""
        self.progress = progress
        """Set for a progress frame, which may skip the handler (`AgentFrameChains._start`)."""
