"""Retention: delete finished tasks, old events, dead refresh tokens and old audit rows, in bounded batches.

Each batch is its own short transaction that selects at most `batch_size` ids by an indexed column and
deletes exactly those, so the hot tables are never locked for long and live inserts keep flowing
between batches. A run stops after `max_batches` per table; what is left waits for the next run.
Only terminal tasks are touched: a queued or running task is never deleted, whatever its age. The tasks
deleted are subtracted from the finished-task counters `/metrics` reads (`forget`, after each batch commits).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from api.db.models.audit import AuditLog
from api.db.models.auth import RefreshToken, RevokedToken
from api.db.models.ops import DeadLetter
from api.db.models.tasks import Task, TaskEvent
from api.db.models.webhooks import TaskCallback, WebhookDelivery
from protocol.status import TERMINAL_STATUSES

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from sqlalchemy import Select
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from api.settings import OpsSettings

    Forget = Callable[[Mapping[str, int]], Awaitable[None]]
    """Told, after each committed batch, how many finished tasks per status it deleted."""

__all__ = ("PurgeReport", "purge")

logger = logging.getLogger(__name__)

_TERMINAL = tuple(str(s) for s in TERMINAL_STATUSES)
_DAY = dt.timedelta(days=1)


@dataclass(slots=True)
class PurgeReport:
    """Rows deleted per table by one run (what the rq job returns, so it shows in the job's result)."""

    tasks: int = 0
    events: int = 0
    audit: int = 0
    refresh_tokens: int = 0
    revoked_tokens: int = 0
    batches: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "tasks": self.tasks,
            "events": self.events,
            "audit": self.audit,
            "refreshTokens": self.refresh_tokens,
            "revokedTokens": self.revoked_tokens,
            "batches": self.batches,
        }


async def _batches(
    sessionmaker: async_sessionmaker[AsyncSession],
    pick: Select[Any],
    remove: Callable[[AsyncSession, list[Any]], Awaitable[Mapping[str, int] | None]],
    settings: OpsSettings,
    report: PurgeReport,
    *,
    forget: Forget | None = None,
) -> int:
    """Select ids with `pick` (already limited), delete them with `remove`, one transaction per batch."""
    deleted = 0
    for _ in range(settings.retention_max_batches):
        async with sessionmaker() as session, session.begin():
            ids = list((await session.execute(pick)).scalars())
            removed = await remove(session, ids) if ids else None
        if not ids:
            break
        if removed and forget is not None:
            await forget(removed)
        deleted += len(ids)
        report.batches += 1
        if len(ids) < settings.retention_batch_size:
            break
    return deleted


async def _remove_tasks(session: AsyncSession, ids: list[Any]) -> dict[str, int]:
    # Children first and explicitly: SQLite only cascades with foreign keys on, and this keeps each step indexed.
    await session.execute(delete(TaskEvent).where(TaskEvent.task_id.in_(ids)))
    await session.execute(delete(DeadLetter).where(DeadLetter.task_id.in_(ids)))
    await session.execute(delete(WebhookDelivery).where(WebhookDelivery.task_id.in_(ids)))
    await session.execute(delete(TaskCallback).where(TaskCallback.task_id.in_(ids)))
    deleted = await session.execute(
        delete(Task).where(Task.id.in_(ids), Task.status.in_(_TERMINAL)).returning(Task.status)
    )
    by_status: dict[str, int] = {}
    for status in deleted.scalars():
        by_status[str(status)] = by_status.get(str(status), 0) + 1
    return by_status


async def _remove_events(session: AsyncSession, ids: list[Any]) -> None:
    await session.execute(delete(TaskEvent).where(TaskEvent.id.in_(ids)))


async def _remove_audit(session: AsyncSession, ids: list[Any]) -> None:
    await session.execute(delete(AuditLog).where(AuditLog.id.in_(ids)))


async def _remove_refresh(session: AsyncSession, ids: list[Any]) -> None:
    await session.execute(delete(RefreshToken).where(RefreshToken.id.in_(ids)))


async def _remove_revoked(session: AsyncSession, ids: list[Any]) -> None:
    await session.execute(delete(RevokedToken).where(RevokedToken.jti.in_(ids)))


async def purge(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: OpsSettings,
    *,
    now: dt.datetime,
    forget: Forget | None = None,
) -> PurgeReport:
    """One retention run at time `now` (a parameter so tests control the clock). A 0-day setting keeps that table.

    `forget` subtracts the deleted tasks from the finished-task counters (`SchedulerClient.forget_finished`).
    """
    report = PurgeReport()
    size = settings.retention_batch_size
    pick: Select[Any]
    if settings.retention_tasks_days > 0:
        cutoff = now - settings.retention_tasks_days * _DAY
        pick = (
            select(Task.id)
            .where(Task.finished_at < cutoff, Task.status.in_(_TERMINAL))
            .order_by(Task.finished_at)
            .limit(size)
        )
        report.tasks = await _batches(sessionmaker, pick, _remove_tasks, settings, report, forget=forget)
    if settings.retention_events_days > 0:
        cutoff = now - settings.retention_events_days * _DAY
        pick = (
            select(TaskEvent.id)
            .join(Task, Task.id == TaskEvent.task_id)
            .where(Task.finished_at < cutoff, Task.status.in_(_TERMINAL))
            .limit(size)
        )
        report.events = await _batches(sessionmaker, pick, _remove_events, settings, report)
    if settings.retention_audit_days > 0:
        cutoff = now - settings.retention_audit_days * _DAY
        pick = select(AuditLog.id).where(AuditLog.at < cutoff).order_by(AuditLog.at).limit(size)
        report.audit = await _batches(sessionmaker, pick, _remove_audit, settings, report)
    # Tokens: only once no one can present them any more (the family's absolute expiry), plus a grace period.
    token_cutoff = now - settings.retention_tokens_days * _DAY
    pick = select(RefreshToken.id).where(RefreshToken.family_expires_at < token_cutoff).limit(size)
    report.refresh_tokens = await _batches(sessionmaker, pick, _remove_refresh, settings, report)
    pick = select(RevokedToken.jti).where(RevokedToken.expires_at < token_cutoff).limit(size)
    report.revoked_tokens = await _batches(sessionmaker, pick, _remove_revoked, settings, report)
    logger.info("retention purge: %s", report.as_dict())
    return report
