"""Submission: validate, persist, enqueue. The database commit always comes first: a 2xx means the row
is durable, whatever Redis does next (the reconciler enqueues a committed row Redis never heard of)."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from api.agents.service import AgentService
from api.auth.identity import CurrentUser
from api.auth.tokens import RateHit, authenticate_claims, authenticate_counting
from api.db.base import utcnow
from api.db.models.tasks import Task
from api.db.models.webhooks import TaskCallback
from api.db.session import AUTOCOMMIT
from api.errors import (
    ConflictError,
    NotFoundError,
    RateLimitedError,
    ValidationFailedError,
)
from api.tasks.submit_group import NEW_ROW_KEYS, SubmitGroup, enqueue_committed, enqueue_specs
from api.tasks.submit_rows import (
    BATCH_INSERT,
    Prepared,
    batch_rows_json,
    new_fields,
    new_row,
    new_spec,
    new_view,
    prepare,
    replay,
    where,
)
from api.tasks.views import task_view

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import AsyncIterator

    from litestar.datastructures import State
    from sqlalchemy import Table
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from api.auth.tokens import AccessClaims
    from api.ratelimit import RateLimiter
    from api.tasks.schemas import TaskCreate
    from protocol.views import TaskView
    from scheduler.client import SchedulerClient

__all__ = ("SubmitLimit", "Submitter", "TokenCaller")

logger = logging.getLogger(__name__)

_SUBMIT_BUCKET = "task_submit"


@dataclass(frozen=True, slots=True)
class SubmitLimit:
    """Per-user submission rate: `limit` requests per `window_s` (a batch counts once)."""

    limit: int
    window_s: float


@dataclass(frozen=True, slots=True)
class TokenCaller:
    """A caller whose access token is verified (`requires_token`) but not yet checked for revocation:
    a submission without an idempotency key finishes that check and counts its rate limit in one Redis
    round trip (`authenticate_counting`)."""

    state: State
    claims: AccessClaims


@dataclass(slots=True)
class _Attempt:
    """What a retried single submission keeps from its first try."""

    task: Task | None = None
    """The row built by the first try: a retry inserts the same id, so a committed first INSERT is found."""
    rate_counted: bool = False


class Submitter:
    """One per request: the `tasks` rows a submission creates, in one transaction, then their enqueue."""

    def __init__(
        self,
        session: AsyncSession | None,
        scheduler: SchedulerClient,
        *,
        limiter: RateLimiter | None = None,
        submit_limit: SubmitLimit | None = None,
        sessions: async_sessionmaker[AsyncSession] | None = None,
        group: SubmitGroup | None = None,
    ) -> None:
        """`session`: the caller's; or None with `sessions` to open one only when needed (`submit`: a
        keyless single submit through `group` needs none)."""
        if session is None and sessions is None:
            raise ValueError("give a session or a session factory")
        self._session_given = session
        self._sessions = sessions
        self._group = group
        self._scheduler = scheduler
        self._limiter = limiter
        self._submit_limit = submit_limit
        self._callbacks: dict[str, str] = {}
        """Task id -> `callbackUrl` of rows built by `_new_row`, written by `_insert` (webhooks)."""

    @property
    def _session(self) -> AsyncSession:
        if self._session_given is None:
            raise RuntimeError("no database session open")
        return self._session_given

    @contextlib.asynccontextmanager
    async def _session_open(self) -> AsyncIterator[None]:
        """The caller's session, or one of our own for the duration (closed, so rolled back if left open)."""
        if self._session_given is not None:
            yield
            return
        assert self._sessions is not None
        async with self._sessions() as session:
            self._session_given = session
            try:
                yield
            finally:
                self._session_given = None

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

    async def _check_agents(self, user: CurrentUser, prepared: list[Prepared]) -> None:
        agents = AgentService(self._session, self._scheduler)
        seen: set[str] = set()
        for p in prepared:
            agent_id = p.data.agent_id
            if agent_id is None or agent_id in seen:
                continue
            try:
                await agents.get_visible(user, agent_id)
            except NotFoundError as exc:
                raise NotFoundError("agent not found", where(p.index, "agentId")) from exc
            seen.add(agent_id)

    def _new_row(self, user: CurrentUser, p: Prepared, now: dt.datetime) -> Task:
        task = new_row(user, p, now)
        if p.data.callback_url is not None:
            self._callbacks[task.id] = p.data.callback_url
        return task

    async def _insert(self, tasks: list[Task]) -> None:
        """One Core INSERT (executemany for a batch; no ORM flush, no event rows). Raises IntegrityError
        on a duplicate idempotency key."""
        conn = await self._session.connection()
        rows = [{k: getattr(t, k) for k in NEW_ROW_KEYS} for t in tasks]
        await conn.execute(insert(cast("Table", Task.__table__)), rows[0] if len(rows) == 1 else rows)
        if callbacks := [{"task_id": t.id, "url": self._callbacks[t.id]} for t in tasks if t.id in self._callbacks]:
            await conn.execute(insert(cast("Table", TaskCallback.__table__)), callbacks)

    async def _enqueue(self, tasks: list[Task]) -> None:
        await enqueue_committed(self._scheduler, tasks)

    async def _authenticate(
        self, caller: CurrentUser | TokenCaller, data: TaskCreate, header_key: str | None, attempt: _Attempt
    ) -> CurrentUser:
        """The caller, fully checked (401 first, before any other answer).

        A submission without an idempotency key counts its rate-limit hit here, with the revocation
        check; one with a key counts it later, only if it is not a replay (a replay is not counted).
        """
        if isinstance(caller, CurrentUser):
            return caller
        keyed = header_key is not None or data.idempotency_key is not None
        if keyed or self._limiter is None or self._submit_limit is None:
            return await authenticate_claims(caller.state, caller.claims)
        hit = RateHit(self._limiter, _SUBMIT_BUCKET, self._submit_limit.limit, self._submit_limit.window_s)
        user, decision = await authenticate_counting(caller.state, caller.claims, hit)
        attempt.rate_counted = True
        if not decision.allowed:
            raise RateLimitedError(decision.retry_after_s)
        return user

    async def submit(
        self, caller: CurrentUser | TokenCaller, data: TaskCreate, header_key: str | None
    ) -> tuple[TaskView, bool]:
        """Create one task; returns it and whether it was created now (False: an idempotent replay).

        The one INSERT runs in autocommit: it is its own transaction, durable when it returns, with
        no BEGIN/COMMIT round trips around it (a task with a `callbackUrl`, which adds a second row, and
        a batch keep an explicit all-or-nothing transaction). Without a caller's session, a keyless,
        callback-free, unpinned submit sends it through the process' `SubmitGroup` (no session at all);
        the rest open a session of their own.

        Pooled connections are not pinged when recently used (api/db/session.py), so a database restart
        shows here as a failed statement on an invalidated connection: the submission then runs once
        more on a fresh one, with the same task id, so a first INSERT that did commit is found, not
        doubled. Only a transaction of our own is retried (a caller's earlier statements died with it).
        """
        attempt = _Attempt()
        user = await self._authenticate(caller, data, header_key, attempt)
        prepared = prepare(data, header_key, None)
        if self._session_given is None and self._group is not None and self._direct_eligible(prepared):
            done = await self._submit_direct(user, prepared, attempt)
            if done is not None:
                return done
        async with self._session_open():
            return await self._submit_in_session(user, prepared, attempt)

    @staticmethod
    def _direct_eligible(prepared: Prepared) -> bool:
        """No key (no replay lookup), no callback (a second row), no pinned agent (a visibility read)."""
        data = prepared.data
        return prepared.key is None and data.callback_url is None and data.agent_id is None

    async def _submit_direct(
        self, user: CurrentUser, prepared: Prepared, attempt: _Attempt
    ) -> tuple[TaskView, bool] | None:
        """The row written (and enqueued) by `SubmitGroup`, alone or with concurrent ones; None when its
        INSERT failed, for the session path to run it again with the same task id (a first INSERT that
        did commit is then found, not doubled; any other error shows there as it always did)."""
        assert self._group is not None
        if not attempt.rate_counted:
            await self._check_rate(user)
            attempt.rate_counted = True
        row = new_fields(user, prepared, utcnow())  # no ORM object: the session path builds one if needed
        if not await self._group.insert(row, prepared.input_json):
            attempt.task = Task(**row)
            return None
        return new_view(row), True

    async def _submit_in_session(
        self, user: CurrentUser, prepared: Prepared, attempt: _Attempt
    ) -> tuple[TaskView, bool]:
        own = not self._session.in_transaction()
        try:
            return await self._submit_once(user, prepared, own, attempt)
        except DBAPIError as error:
            if not (own and error.connection_invalidated):
                raise
            logger.warning("submit met a dead database connection; retrying once on a fresh one")
            await self._session.rollback()
        return await self._submit_once(user, prepared, own, attempt)

    async def _submit_once(
        self, user: CurrentUser, prepared: Prepared, own: bool, attempt: _Attempt
    ) -> tuple[TaskView, bool]:
        # With a callback the task row and its callback row commit together; a caller that already
        # opened a transaction (a dead letter's retry) keeps it.
        if prepared.data.callback_url is None and own:
            await self._session.connection(execution_options=AUTOCOMMIT)
        mine = attempt.task
        if prepared.key is not None:
            existing = (await self._existing_by_key(user, [prepared.key])).get(prepared.key)
            if existing is not None and (mine is None or existing.id != mine.id):
                return task_view(replay(prepared, existing)), False
            if existing is not None:  # our first try committed before its connection died
                await self._enqueue([existing])
                return task_view(existing), True
        if not attempt.rate_counted:
            await self._check_rate(user)
            attempt.rate_counted = True
        await self._check_agents(user, [prepared])
        task = mine or self._new_row(user, prepared, utcnow())
        attempt.task = task
        try:
            await self._insert([task])
            await self._session.commit()
        except IntegrityError:
            await self._session.rollback()
            if mine is not None and await self._session.get(Task, task.id) is not None:
                pass  # our first try committed before its connection died: the row is ours
            elif prepared.key is None:
                raise
            else:
                # Another request with the same key committed first: answer as its replay.
                existing = (await self._existing_by_key(user, [prepared.key])).get(prepared.key)
                if existing is None:
                    raise
                return task_view(replay(prepared, existing)), False
        await self._enqueue([task])
        return task_view(task), True

    async def submit_batch(self, user: CurrentUser, items: list[TaskCreate]) -> tuple[list[TaskView], bool]:
        """All or nothing: every item is validated before one transaction inserts the new ones.

        Items with an idempotency key already used by this user are answered with the existing task
        (or refuse the whole batch when the request differs). Returns the tasks in request order and
        whether any was created.
        """
        prepared = [prepare(item, None, i) for i, item in enumerate(items)]
        async with self._session_open():
            return await self._submit_batch(user, prepared)

    async def _submit_batch(self, user: CurrentUser, prepared: list[Prepared]) -> tuple[list[TaskView], bool]:
        keys = [p.key for p in prepared if p.key is not None]
        if len(keys) != len(set(keys)):
            raise ValidationFailedError("an idempotencyKey appears twice in the batch", {"field": "idempotencyKey"})
        existing = await self._existing_by_key(user, keys)
        views: list[TaskView | None] = []
        fresh: list[Prepared] = []
        for p in prepared:
            if p.key is not None and p.key in existing:
                views.append(task_view(replay(p, existing[p.key])))
            else:
                views.append(None)
                fresh.append(p)
        if not fresh:
            return [v for v in views if v is not None], False
        await self._check_rate(user)
        await self._check_agents(user, fresh)
        now = utcnow()
        # Plain rows, no ORM object per task: nothing here needs one (see `new_fields`).
        rows = [new_fields(user, p, now) for p in fresh]
        try:
            await self._insert_batch(rows, fresh)
            await self._session.commit()
        except IntegrityError as exc:
            await self._session.rollback()
            raise ConflictError("a concurrent request used one of these idempotency keys; retry the batch") from exc
        await self._enqueue_batch(rows, fresh)
        made = iter(rows)
        return [v if v is not None else new_view(next(made)) for v in views], True

    async def _insert_batch(self, rows: list[dict[str, Any]], fresh: list[Prepared]) -> None:
        """The batch's rows in the session's transaction: one statement of one JSON parameter on PostgreSQL
        (`BATCH_INSERT`), a Core executemany elsewhere. Raises IntegrityError on a duplicate idempotency key."""
        conn = await self._session.connection()
        if conn.dialect.name == "postgresql":
            await conn.execute(BATCH_INSERT, {"rows": batch_rows_json(rows, [p.input_json for p in fresh])})
        else:
            await conn.execute(insert(cast("Table", Task.__table__)), rows[0] if len(rows) == 1 else rows)
        callbacks = [
            {"task_id": row["id"], "url": p.data.callback_url}
            for row, p in zip(rows, fresh, strict=True)
            if p.data.callback_url is not None
        ]
        if callbacks:
            await conn.execute(insert(cast("Table", TaskCallback.__table__)), callbacks)

    async def _enqueue_batch(self, rows: list[dict[str, Any]], fresh: list[Prepared]) -> None:
        """After the commit; a Redis failure is logged, not raised (the reconciler enqueues the rows)."""
        await enqueue_specs(self._scheduler, [new_spec(r, p.input_json) for r, p in zip(rows, fresh, strict=True)])
