"""Tasks over REST and the result path for agents: validate, persist, enqueue, read, cancel, record.

Owns the `tasks` rows' life outside the recorder. The database commit always comes first: a 2xx
means the row is durable, whatever Redis does next (the reconciler closes that gap).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import msgspec
import redis.exceptions
from sqlalchemy import and_, bindparam, case, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from api.agents.service import AgentService
from api.db.base import JsonColumn, utcnow
from api.db.models.tasks import Task, TaskEvent
from api.db.models.webhooks import TaskCallback
from api.errors import (
    ApiError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServiceUnavailableError,
    TaskNotRunnableError,
    ValidationFailedError,
)
from api.tasks import history
from api.tasks.result_writer import apply_writes
from protocol.errors import ErrorCode
from protocol.limits import MAX_IDEMPOTENCY_KEY_LENGTH, MAX_TASK_INPUT_BYTES, MAX_TASK_OUTPUT_BYTES
from protocol.status import TERMINAL_STATUSES, TaskStatus
from protocol.views import TaskErrorInfo, TaskEventView, TaskPage, TaskView
from scheduler.types import Outcome, TaskSpec

if TYPE_CHECKING:
    import asyncio

    from sqlalchemy import Table
    from sqlalchemy.ext.asyncio import AsyncSession

    from api.auth.identity import CurrentUser
    from api.ratelimit import RateLimiter
    from api.tasks.result_writer import Kind, ResultWriter
    from api.tasks.schemas import TaskCreate
    from scheduler.client import SchedulerClient

__all__ = (
    "HISTORY_LIMIT",
    "Recorded",
    "SubmitLimit",
    "TaskService",
    "spec_for",
    "task_view",
)

logger = logging.getLogger(__name__)

HISTORY_LIMIT = 1000
"""Most events `GET /api/tasks/{id}` returns (the newest ones)."""
_TERMINAL = tuple(str(s) for s in TERMINAL_STATUSES)
_REDIS_ERRORS = (redis.exceptions.RedisError, OSError)
_SUBMIT_BUCKET = "task_submit"
_KEY_PATTERN = re.compile(rf"[\x21-\x7e]{{1,{MAX_IDEMPOTENCY_KEY_LENGTH}}}")

# What the agent is told when the scheduler refuses its frame.
_REFUSALS: dict[Outcome, ErrorCode] = {
    Outcome.STALE_ATTEMPT: ErrorCode.STALE_ATTEMPT,
    Outcome.NOT_ASSIGNED: ErrorCode.NOT_ASSIGNED,
    Outcome.NOT_FOUND: ErrorCode.NOT_FOUND,
    Outcome.TERMINAL: ErrorCode.TASK_NOT_RUNNABLE,
}


@dataclass(frozen=True, slots=True)
class SubmitLimit:
    """Per-user submission rate: `limit` requests per `window_s` (a batch counts once)."""

    limit: int
    window_s: float


@dataclass(frozen=True, slots=True)
class Recorded:
    """What to tell the agent about a `task/result` or `task/error` frame.

    `ack` is True only once the outcome is committed to the database: send `ack` (with
    `duplicate`). Otherwise send an error frame with `error`.
    """

    ack: bool
    duplicate: bool
    status: str | None
    error: ErrorCode | None = None


@dataclass(slots=True)
class _Prepared:
    index: int | None
    """Position in a batch (None for a single submission)."""
    data: TaskCreate
    key: str | None
    request_hash: str
    input_json: bytes


# Columns a new row sets; the JSON outcome columns stay out so they are SQL NULL (an empty slot).
_NEW_ROW_KEYS = (
    "id",
    "owner_id",
    "type",
    "input",
    "priority",
    "agent_id",
    "capabilities",
    "timeout_s",
    "max_attempts",
    "run_at",
    "idempotency_key",
    "request_hash",
    "status",
    "attempt",
    "seq",
    "created_at",
    "updated_at",
    "history",
)


def _ms(value: dt.datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def spec_for(task: Task, *, status: str | None = None, fresh: bool = False) -> TaskSpec:
    """The scheduler's view of a row.

    `fresh`: a task just submitted (seq 0, so the scheduler records its first status as event 1,
    the same event the row was written with). Otherwise the row's attempt and seq carry over, so
    fencing and event order continue. `status` overrides the row's (the rebuild requeues in-flight
    tasks).
    """
    return TaskSpec(
        task_id=task.id,
        owner_id=task.owner_id,
        type=task.type,
        input_json=msgspec.json.encode(task.input),
        priority=task.priority,
        agent_id=task.agent_id,
        capabilities=tuple(task.capabilities),
        timeout_s=task.timeout_s,
        max_attempts=task.max_attempts,
        run_at_ms=_ms(task.run_at),
        attempt=0 if fresh else task.attempt,
        seq=0 if fresh else task.seq,
        status=status or task.status,
    )


def _error_info(error: dict[str, Any] | None) -> TaskErrorInfo | None:
    if not error:
        return None
    return TaskErrorInfo(error=str(error.get("error", "error")), message=str(error.get("message", "")))


def task_view(task: Task, events: list[TaskEvent] | None = None) -> TaskView:
    """The wire view of a row; `events` only for the single-task GET."""
    return TaskView(
        id=task.id,
        type=task.type,
        status=TaskStatus(task.status),
        priority=task.priority,
        input=task.input,
        attempt=task.attempt,
        max_attempts=task.max_attempts,
        capabilities=list(task.capabilities),
        timeout_seconds=task.timeout_s,
        owner_id=task.owner_id,
        created_at=task.created_at,
        updated_at=task.updated_at,
        result=task.result,
        error=_error_info(task.error),
        agent_id=task.assigned_agent_id,
        pinned_agent_id=task.agent_id,
        run_at=task.run_at,
        idempotency_key=task.idempotency_key,
        started_at=task.started_at,
        finished_at=task.finished_at,
        events=None if events is None else [_event_view(e) for e in events],
    )


_EVENT_TYPES: dict[str, Literal["task/status", "task/progress", "task/stream"]] = {
    "task/progress": "task/progress",
    "task/stream": "task/stream",
}


def _event_view(event: TaskEvent) -> TaskEventView:
    return TaskEventView(
        seq=event.seq,
        type=_EVENT_TYPES.get(event.type, "task/status"),
        attempt=event.attempt,
        at=event.at,
        status=TaskStatus(event.status) if event.status else None,
        agent_id=event.agent_id,
        data=event.data,
    )


def _request_hash(data: TaskCreate) -> str:
    """Fingerprint of what was asked, so a replayed key can be told apart from a reused one.

    Key order inside `input` and the offset of `runAt` do not change it; defaults and explicit
    defaults hash alike.
    """
    canonical = msgspec.structs.replace(
        data,
        idempotency_key=None,
        capabilities=sorted(set(data.capabilities)),
        run_at=data.run_at.astimezone(dt.UTC) if data.run_at else None,
    )
    return hashlib.sha256(msgspec.json.encode(msgspec.to_builtins(canonical), order="sorted")).hexdigest()


def _where(index: int | None, field: str) -> dict[str, Any]:
    return {"field": field} if index is None else {"field": field, "index": index}


class TaskService:
    """One per request (or per agent frame): a database session and the scheduler client."""

    def __init__(
        self,
        session: AsyncSession,
        scheduler: SchedulerClient,
        *,
        limiter: RateLimiter | None = None,
        submit_limit: SubmitLimit | None = None,
        writer: ResultWriter | None = None,
        redis_lane: asyncio.Semaphore | None = None,
    ) -> None:
        """`writer`: commit agent outcomes in the process' shared batches instead of one transaction each.

        `redis_lane`: held around the scheduler call of `record_result`/`record_failure` only (not the
        commit wait), so a bound on Redis work does not also cap how many results a batch gathers.
        """
        self._session = session
        self._writer = writer
        self._redis_lane = redis_lane
        self._scheduler = scheduler
        self._limiter = limiter
        self._submit_limit = submit_limit
        self._callbacks: dict[str, str] = {}
        """Task id -> `callbackUrl` of rows built by `_new_row`, written by `_insert` (webhooks)."""

    # --- submission ---------------------------------------------------------------------------

    def _prepare(self, data: TaskCreate, header_key: str | None, index: int | None) -> _Prepared:
        if header_key is not None and not _KEY_PATTERN.fullmatch(header_key):
            raise ValidationFailedError(
                f"Idempotency-Key must be 1..{MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters",
                {"field": "Idempotency-Key"},
            )
        key = data.idempotency_key
        if header_key is not None and key is not None and header_key != key:
            raise ValidationFailedError(
                "Idempotency-Key header and idempotencyKey field differ", _where(index, "idempotencyKey")
            )
        key = key or header_key
        if data.agent_id is not None and data.capabilities:
            raise ValidationFailedError("give agentId or capabilities, not both", _where(index, "capabilities"))
        if data.run_at is not None and data.run_at.tzinfo is None:
            raise ValidationFailedError("runAt needs a UTC offset (RFC 3339)", _where(index, "runAt"))
        input_json = msgspec.json.encode(data.input)
        if len(input_json) > MAX_TASK_INPUT_BYTES:
            raise PayloadTooLargeError(f"input is over {MAX_TASK_INPUT_BYTES} bytes", _where(index, "input"))
        return _Prepared(index, data, key, _request_hash(data), input_json)

    async def _check_rate(self, user: CurrentUser) -> None:
        """Count one submission; Redis down here means 503 before anything is written."""
        if self._limiter is None or self._submit_limit is None:
            return
        decision = await self._limiter.hit(
            _SUBMIT_BUCKET, user.id, limit=self._submit_limit.limit, window_s=self._submit_limit.window_s
        )
        if not decision.allowed:
            raise RateLimitedError(decision.retry_after_s)

    async def _existing_by_key(self, user: CurrentUser, keys: list[str]) -> dict[str, Task]:
        if not keys:
            return {}
        rows = await self._session.execute(select(Task).where(Task.owner_id == user.id, Task.idempotency_key.in_(keys)))
        return {t.idempotency_key: t for t in rows.scalars() if t.idempotency_key is not None}

    @staticmethod
    def _replay(prepared: _Prepared, existing: Task) -> Task:
        if existing.request_hash != prepared.request_hash:
            raise ApiError(
                ErrorCode.IDEMPOTENCY_KEY_REUSED,
                "this Idempotency-Key was used with a different request",
                _where(prepared.index, "idempotencyKey"),
            )
        return existing

    async def _check_agents(self, user: CurrentUser, prepared: list[_Prepared]) -> None:
        agents = AgentService(self._session, self._scheduler)
        seen: set[str] = set()
        for p in prepared:
            agent_id = p.data.agent_id
            if agent_id is None or agent_id in seen:
                continue
            try:
                await agents.get_visible(user, agent_id)
            except NotFoundError as exc:
                raise NotFoundError("agent not found", _where(p.index, "agentId")) from exc
            seen.add(agent_id)

    def _new_row(self, user: CurrentUser, p: _Prepared, now: dt.datetime) -> Task:
        data = p.data
        run_at = data.run_at.astimezone(dt.UTC) if data.run_at else None
        status = str(TaskStatus.SCHEDULED if run_at is not None and run_at > now else TaskStatus.QUEUED)
        # The first status change is written with the row, so the history is whole even if Redis
        # never hears of the task; the enqueue (seq 0) makes the scheduler emit the same event as
        # seq 1, which the recorder then merges onto this entry.
        task = Task(
            id=str(uuid.uuid4()),
            owner_id=user.id,
            type=data.type,
            input=data.input,
            priority=data.priority,
            agent_id=data.agent_id,
            capabilities=sorted(set(data.capabilities)),
            timeout_s=data.timeout_seconds,
            max_attempts=data.max_attempts,
            run_at=run_at,
            idempotency_key=p.key,
            request_hash=p.request_hash,
            status=status,
            attempt=0,
            seq=1,
            created_at=now,
            updated_at=now,
            history=[history.entry(1, status, attempt=0, agent_id=None, data=None, at=now)],
        )
        if data.callback_url is not None:
            self._callbacks[task.id] = data.callback_url
        return task

    async def _insert(self, tasks: list[Task]) -> None:
        """One Core INSERT (executemany for a batch; no ORM flush, no event rows). Raises IntegrityError
        on a duplicate idempotency key."""
        conn = await self._session.connection()
        rows = [{k: getattr(t, k) for k in _NEW_ROW_KEYS} for t in tasks]
        await conn.execute(insert(cast("Table", Task.__table__)), rows[0] if len(rows) == 1 else rows)
        if callbacks := [{"task_id": t.id, "url": self._callbacks[t.id]} for t in tasks if t.id in self._callbacks]:
            await conn.execute(insert(cast("Table", TaskCallback.__table__)), callbacks)

    async def _enqueue(self, tasks: list[Task]) -> None:
        """After the commit. A Redis failure is logged, not raised: the reconciler enqueues the rows."""
        if not tasks:
            return
        try:
            if len(tasks) == 1:
                await self._scheduler.enqueue(spec_for(tasks[0], fresh=True))
            else:
                await self._scheduler.enqueue_many([spec_for(t, fresh=True) for t in tasks])
        except _REDIS_ERRORS:
            logger.warning(
                "enqueue failed after commit; the reconciler will enqueue count=%d first_task_id=%s",
                len(tasks),
                tasks[0].id,
                exc_info=True,
            )

    async def submit(self, user: CurrentUser, data: TaskCreate, header_key: str | None) -> tuple[TaskView, bool]:
        """Create one task; returns it and whether it was created now (False: an idempotent replay).

        The one INSERT runs in autocommit: it is its own transaction, durable when it returns, with
        no BEGIN/COMMIT round trips around it (a task with a `callbackUrl`, which adds a second row, and
        a batch keep an explicit all-or-nothing transaction).
        """
        prepared = self._prepare(data, header_key, None)
        # With a callback the task row and its callback row commit together; a caller that already
        # opened a transaction (a dead letter's retry) keeps it.
        if data.callback_url is None and not self._session.in_transaction():
            await self._session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        if prepared.key is not None:
            existing = (await self._existing_by_key(user, [prepared.key])).get(prepared.key)
            if existing is not None:
                return task_view(self._replay(prepared, existing)), False
        await self._check_rate(user)
        await self._check_agents(user, [prepared])
        task = self._new_row(user, prepared, utcnow())
        try:
            await self._insert([task])
            await self._session.commit()
        except IntegrityError:
            # Another request with the same key committed first: answer as its replay.
            await self._session.rollback()
            if prepared.key is None:
                raise
            existing = (await self._existing_by_key(user, [prepared.key])).get(prepared.key)
            if existing is None:
                raise
            return task_view(self._replay(prepared, existing)), False
        await self._enqueue([task])
        return task_view(task), True

    async def submit_batch(self, user: CurrentUser, items: list[TaskCreate]) -> tuple[list[TaskView], bool]:
        """All or nothing: every item is validated before one transaction inserts the new ones.

        Items with an idempotency key already used by this user are answered with the existing task
        (or refuse the whole batch when the request differs). Returns the tasks in request order and
        whether any was created.
        """
        prepared = [self._prepare(item, None, i) for i, item in enumerate(items)]
        keys = [p.key for p in prepared if p.key is not None]
        if len(keys) != len(set(keys)):
            raise ValidationFailedError("an idempotencyKey appears twice in the batch", {"field": "idempotencyKey"})
        existing = await self._existing_by_key(user, keys)
        results: list[Task | None] = []
        fresh: list[_Prepared] = []
        for p in prepared:
            if p.key is not None and p.key in existing:
                results.append(self._replay(p, existing[p.key]))
            else:
                results.append(None)
                fresh.append(p)
        if not fresh:
            return [task_view(t) for t in results if t is not None], False
        await self._check_rate(user)
        await self._check_agents(user, fresh)
        now = utcnow()
        created: list[Task] = []
        for position, p in enumerate(prepared):
            if results[position] is not None:
                continue
            task = self._new_row(user, p, now)
            results[position] = task
            created.append(task)
        try:
            await self._insert(created)
            await self._session.commit()
        except IntegrityError as exc:
            await self._session.rollback()
            raise ConflictError("a concurrent request used one of these idempotency keys; retry the batch") from exc
        await self._enqueue(created)
        return [task_view(t) for t in results if t is not None], True

    # --- reads ----------------------------------------------------------------------------------

    async def get_visible(self, user: CurrentUser, task_id: str) -> Task:
        """The task if `user` owns it (admins: any), else `NotFoundError` (same as an unknown id)."""
        task = await self._session.get(Task, task_id) if len(task_id) <= 64 else None
        if task is None or not (user.role == "admin" or task.owner_id == user.id):
            raise NotFoundError()
        return task

    async def detail(self, user: CurrentUser, task_id: str) -> TaskView:
        task = await self.get_visible(user, task_id)
        events = await history.read_events(self._session, task, limit=HISTORY_LIMIT, newest=True)
        return task_view(task, events)

    async def list_page(
        self,
        user: CurrentUser,
        *,
        status: str | None,
        agent_id: str | None,
        type_: str | None,
        page: int,
        page_size: int,
    ) -> TaskPage:
        conditions = []
        if user.role != "admin":
            conditions.append(Task.owner_id == user.id)
        if status is not None:
            try:
                conditions.append(Task.status == str(TaskStatus(status)))
            except ValueError as exc:
                raise ValidationFailedError("unknown status", {"field": "status"}) from exc
        if agent_id is not None:
            conditions.append(or_(Task.agent_id == agent_id, Task.assigned_agent_id == agent_id))
        if type_ is not None:
            conditions.append(Task.type == type_)
        where = and_(*conditions) if conditions else None
        count = select(func.count()).select_from(Task)
        query = select(Task).order_by(Task.created_at.desc(), Task.id.desc())
        if where is not None:
            count = count.where(where)
            query = query.where(where)
        total = int((await self._session.execute(count)).scalar_one())
        rows = (await self._session.execute(query.limit(page_size).offset((page - 1) * page_size))).scalars()
        return TaskPage(items=[task_view(t) for t in rows], total=total, page=page, page_size=page_size)

    # --- cancel ---------------------------------------------------------------------------------

    async def cancel(self, user: CurrentUser, task_id: str) -> Task:
        """Cancel in Redis first (it decides against dispatch, atomically), then record it here.

        The caller commits (with its audit row). A task Redis does not know (never enqueued after a
        crash, or Redis lost it) is canceled in the database alone; the reconciler skips it then.
        """
        task = await self.get_visible(user, task_id)
        if task.status in _TERMINAL:
            raise TaskNotRunnableError(f"task is already {task.status}", {"status": task.status})
        await self._cancel_row(task, reason="canceled")
        return task

    async def cancel_pinned_to(self, agent_id: str) -> int:
        """Cancel the unfinished tasks pinned to a deleted agent: nobody else may ever run them.

        The caller commits. Returns how many were canceled.
        """
        rows = await self._session.scalars(
            select(Task).where(Task.agent_id == agent_id, Task.status.not_in(_TERMINAL)).order_by(Task.id)
        )
        canceled = 0
        for task in rows.all():
            with contextlib.suppress(TaskNotRunnableError):  # finished meanwhile
                await self._cancel_row(task, reason="agent_deleted")
                canceled += 1
        return canceled

    async def _cancel_row(self, task: Task, *, reason: str) -> None:
        try:
            result = await self._scheduler.cancel(task.id, reason=reason)
        except _REDIS_ERRORS as exc:
            raise ServiceUnavailableError("the queue is unavailable, retry later") from exc
        if result.outcome == "terminal":
            raise TaskNotRunnableError("task already finished", {"status": task.status})
        seq = result.seq if result.outcome == "canceled" and result.seq else task.seq + 1
        now = utcnow()
        canceled = result.outcome == "canceled"
        change = history.entry(
            seq,
            str(TaskStatus.CANCELED),
            attempt=(result.attempt or 0) if canceled else task.attempt,
            agent_id=result.agent_id if canceled else None,
            data={"reason": reason},
            at=now,
        )
        # One UPDATE: the status and its history entry (the row lock orders it with the recorder).
        await self._session.execute(
            update(Task)
            .where(
                Task.id == task.id,
                # An attempt's partial output may have made the row `canceled` first (without a seq):
                # the cancel still records its own status change then.
                or_(Task.status.not_in(_TERMINAL), and_(Task.status == str(TaskStatus.CANCELED), Task.seq < seq)),
            )
            .values(
                status=str(TaskStatus.CANCELED),
                seq=case((Task.seq < seq, seq), else_=Task.seq),
                finished_at=now,
                updated_at=now,
                history=history.json_append(Task.history, bindparam("b_change", [change], type_=JsonColumn)),
            )
        )
        await self._session.flush()
        await self._session.refresh(task)

    # --- results from agents (the WebSocket engineer calls these) ---------------------------------
    #
    # Order: the scheduler first, then the database, then the ack.
    #   1. `scheduler.complete/fail` is the fence: one Lua script checks (task, attempt, agent) and
    #      moves the task, so two copies of a result, or a stale attempt, can never both win. The
    #      database cannot fence by itself: its attempt/agent columns trail Redis (the recorder is
    #      asynchronous), so a fast task's row may not show its assignment yet.
    #   2. The outcome (result or error) is written with a conditional UPDATE that only fills an
    #      empty slot, and committed. A duplicate frame (Redis says DUPLICATE) re-runs this step,
    #      which also repairs a crash between 1 and 2.
    #   3. Only then does the caller ack the agent. Until the ack, the agent resends.
    # So a result is recorded exactly once (first committed write wins) and acked only after commit.

    async def record_result(self, task_id: str, attempt: int, agent_id: str, output: Any) -> Recorded:
        """Record an agent's result; ack the agent only when the answer says `ack`.

        Raises whatever Redis or the database raise when they are down: then nothing is acked and
        the agent resends (a resend is answered as a duplicate once the first one got through).
        """
        encoded = msgspec.json.encode(output)
        if len(encoded) > MAX_TASK_OUTPUT_BYTES:
            return Recorded(False, False, None, ErrorCode.PAYLOAD_TOO_LARGE)
        async with self._redis_lane or contextlib.nullcontext():
            # Redis keeps the output a while: if this process dies before the commit, the reconciler fills it in.
            applied = await self._scheduler.complete(task_id, attempt, agent_id, encoded)
        if applied.outcome not in (Outcome.OK, Outcome.DUPLICATE):
            return Recorded(False, False, applied.status, _REFUSALS.get(applied.outcome, ErrorCode.CONFLICT))
        params = {
            "b_id": task_id,
            "b_output": output,
            "b_attempt": attempt,
            "b_agent": agent_id,
            "b_now": utcnow(),
            "b_seq": -1 if applied.seq is None else applied.seq,
            "b_prior": applied.prior,
        }
        if applied.status == TaskStatus.CANCELED:
            # The attempt was canceled while it ran: its (partial) output is kept, the status stays.
            await self._write("partial", params)
            return Recorded(True, applied.outcome == Outcome.DUPLICATE, str(TaskStatus.CANCELED))
        await self._write("result", params)
        return Recorded(True, applied.outcome == Outcome.DUPLICATE, str(TaskStatus.DONE))

    async def record_failure(
        self,
        task_id: str,
        attempt: int,
        agent_id: str,
        *,
        error: str,
        message: str,
        retryable: bool,
        retry_delay_s: float | None,
    ) -> Recorded:
        """Same order as `record_result`. A retry (`scheduled`) keeps the error as the latest one."""
        async with self._redis_lane or contextlib.nullcontext():
            applied = await self._scheduler.fail(
                task_id,
                attempt,
                agent_id,
                error=error,
                message=message,
                retryable=retryable,
                retry_delay_s=retry_delay_s,
            )
        if applied.outcome not in (Outcome.OK, Outcome.DUPLICATE):
            return Recorded(False, False, applied.status, _REFUSALS.get(applied.outcome, ErrorCode.CONFLICT))
        status = applied.status or str(TaskStatus.FAILED)
        params: dict[str, Any] = {
            "b_id": task_id,
            "b_error": {"error": error, "message": message, "attempt": attempt, "retryable": retryable},
            "b_attempt": attempt,
            "b_agent": agent_id,
            "b_now": utcnow(),
            "b_seq": -1 if applied.seq is None else applied.seq,
        }
        if status == TaskStatus.FAILED:
            await self._write("failed", params)
        else:
            # A retry: record the error; the status follows through the recorder (seq-ordered).
            await self._write("retry", params | {"b_status": status})
        return Recorded(True, applied.outcome == Outcome.DUPLICATE, status)

    async def _write(self, kind: Kind, params: dict[str, Any]) -> None:
        """Commit one outcome: through the process' batch writer, or in this session's own transaction."""
        if self._writer is not None:
            await self._writer.write(kind, params)
            return
        await apply_writes(await self._session.connection(), [(kind, params)])
        await self._session.commit()
