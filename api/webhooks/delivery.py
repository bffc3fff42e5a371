"""Finding finished tasks to call back for, and one signed delivery attempt.

No hook on the hot path: `collect` (a periodic side job) reads tasks that finished since a watermark kept in
Redis, for owners with an active webhook, and writes one `webhook_deliveries` row per (task, user) — the
unique constraint makes a second scanner a no-op. Each new row becomes one rq job (`deliver_webhook`) whose
retries (with backoff) are rq's. The watermark trails `now` by `LAG` so rows committed a moment after their
finish time are still seen. Redis losing the watermark loses no delivery: it is recovered from the database
(the newest finished task that already has a delivery, else the oldest webhook), and the rescan of what was
already seen makes no second row.

A delivery is `POST <url>` with the task as JSON and
`X-Taskyard-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>`, `X-Taskyard-Timestamp`
(unix seconds), `X-Taskyard-Delivery` (the delivery id, the same on every retry) and
`X-Taskyard-Event: task.finished`. Receivers reject old timestamps (replay) and dedupe by delivery id.
The URL is checked again before every attempt (DNS may have changed); redirects are not followed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import time
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from api.db.base import utcnow
from api.db.models.tasks import Task
from api.db.models.webhooks import TaskCallback, Webhook, WebhookDelivery
from api.planner.errors import SecretUnavailableError
from api.planner.ssrf import UnsafeUrlError, check_base_url, system_resolver
from api.tasks.service import task_view
from api.webhooks.service import keyring, url_allowlist
from protocol.status import TERMINAL_STATUSES

if TYPE_CHECKING:
    import redis.asyncio
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from api.settings import ApiSettings

__all__ = ("LAG", "collect", "deliver", "mark_key", "sign")

LAG = dt.timedelta(seconds=2)
STALE_PENDING = dt.timedelta(minutes=10)
"""A delivery still pending and never tried after this long lost its job; it is enqueued again."""
BATCH = 500
_TERMINAL = tuple(str(s) for s in TERMINAL_STATUSES)
_DONE_STATES = ("delivered", "refused", "canceled")


def mark_key(prefix: str) -> str:
    return f"{prefix}:ops:webhook_mark"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    return "v1=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


async def collect(
    sessionmaker: async_sessionmaker[AsyncSession], redis: redis.asyncio.Redis, prefix: str, *, now: dt.datetime
) -> list[str]:
    """New delivery ids for tasks finished since the watermark (recovered from the database when Redis lost it)."""
    upper = now - LAG
    raw = await redis.get(mark_key(prefix))
    if raw is not None:
        mark = dt.datetime.fromisoformat(raw.decode() if isinstance(raw, bytes) else str(raw))
    else:
        recovered = await _recover_mark(sessionmaker)
        if recovered is None:  # no webhook at all: nothing can be owed yet
            await redis.set(mark_key(prefix), upper.isoformat())
            return []
        mark = recovered
    async with sessionmaker() as session:
        # A task's own callback wins over its owner's URL; either one makes a delivery.
        target = func.coalesce(TaskCallback.url, Webhook.url)
        query = (
            select(Task.id, Task.owner_id, Task.finished_at, target)
            .join(Webhook, Webhook.user_id == Task.owner_id)
            .outerjoin(TaskCallback, TaskCallback.task_id == Task.id)
            .where(
                Webhook.active.is_(True),
                target.is_not(None),
                Task.finished_at > mark,
                Task.finished_at <= upper,
                Task.status.in_(_TERMINAL),
            )
            .order_by(Task.finished_at)
            .limit(BATCH)
        )
        rows = (await session.execute(query)).all()
        known = set()
        if rows:
            existing = select(WebhookDelivery.task_id).where(WebhookDelivery.task_id.in_([r[0] for r in rows]))
            known = set((await session.execute(existing)).scalars())
        new = [
            WebhookDelivery(user_id=owner, task_id=task_id, url=url, status="pending", attempts=0)
            for task_id, owner, _, url in rows
            if task_id not in known
        ]
        session.add_all(new)
        try:
            await session.commit()
        except IntegrityError:
            await session.rollback()  # another scanner wrote them first; it enqueues them
            return []
        ids = [d.id for d in new]
        # A row whose job never reached Redis (the enqueue failed after the commit) is enqueued again;
        # the job id is the delivery's, and a delivered row is never sent twice.
        stale = select(WebhookDelivery.id).where(
            WebhookDelivery.status == "pending",
            WebhookDelivery.attempts == 0,
            WebhookDelivery.created_at < now - STALE_PENDING,
        )
        ids += list((await session.execute(stale.limit(BATCH))).scalars())
    last = rows[-1][2] if len(rows) == BATCH and rows[-1][2] is not None else upper
    await redis.set(mark_key(prefix), last.isoformat())
    return ids


async def _recover_mark(sessionmaker: async_sessionmaker[AsyncSession]) -> dt.datetime | None:
    """Where scanning may safely restart: every task finished at or before the newest one with a delivery was
    already scanned (the scan goes in finish order); with no delivery yet, from when the first webhook existed."""
    async with sessionmaker() as session:
        delivered = select(func.max(Task.finished_at)).join(WebhookDelivery, WebhookDelivery.task_id == Task.id)
        newest = (await session.execute(delivered)).scalar_one_or_none()
        if newest is not None:
            return newest
        oldest_hook = (await session.execute(select(func.min(Webhook.created_at)))).scalar_one_or_none()
    return oldest_hook - LAG if oldest_hook is not None else None


def _body(task: Task, delivery_id: str) -> bytes:
    view = task_view(task)
    return msgspec.json.encode({"event": "task.finished", "deliveryId": delivery_id, "task": view})


async def _post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> tuple[int | None, str | None]:
    try:
        async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
            response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return None, type(exc).__name__
    return response.status_code, None


async def deliver(
    sessionmaker: async_sessionmaker[AsyncSession], settings: ApiSettings, delivery_id: str, *, last_attempt: bool
) -> str:
    """One attempt; returns the delivery's status (`retrying`/`failed` mean this attempt did not succeed)."""
    async with sessionmaker() as session:
        row = await session.get(WebhookDelivery, delivery_id)
        if row is None:
            return "canceled"
        if row.status in _DONE_STATES:
            return row.status
        status = await _attempt(session, settings, row, last_attempt=last_attempt)
        row.status = status
        row.updated_at = utcnow()
        await session.commit()
        return status


async def _attempt(session: AsyncSession, settings: ApiSettings, row: WebhookDelivery, *, last_attempt: bool) -> str:
    hook = await session.get(Webhook, row.user_id)
    task = await session.get(Task, row.task_id)
    ring = keyring(settings)
    if hook is None or not hook.active or task is None or ring is None:
        row.last_error = "the webhook was removed or disabled, or the task is gone"
        return "canceled"
    try:
        secret = ring.decrypt(hook.user_id, hook.secret_enc)
    except SecretUnavailableError:
        row.last_error = "the signing secret cannot be decrypted (secrets key rotated away?)"
        return "failed"
    callback = await session.get(TaskCallback, row.task_id)
    target = callback.url if callback is not None else hook.url
    if target is None:
        row.last_error = "no callback URL for this task any more"
        return "canceled"
    try:
        url = await check_base_url(target, allow=url_allowlist(settings), resolve=system_resolver)
    except UnsafeUrlError as exc:
        row.last_error = exc.message[:500]
        return "refused"
    row.url = url
    body = _body(task, row.id)
    timestamp = int(time.time())
    headers: dict[str, Any] = {
        "Content-Type": "application/json",
        "User-Agent": "taskyard-webhooks/1",
        "X-Taskyard-Event": "task.finished",
        "X-Taskyard-Delivery": row.id,
        "X-Taskyard-Timestamp": str(timestamp),
        "X-Taskyard-Signature": sign(secret, timestamp, body),
    }
    row.attempts += 1
    code, error = await _post(url, body, headers, settings.ops.webhook_timeout_s)
    row.last_status_code = code
    row.last_error = error
    if code is not None and 200 <= code < 300:
        row.delivered_at = utcnow()
        return "delivered"
    if row.last_error is None:
        row.last_error = f"HTTP {code}"
    return "failed" if last_attempt else "retrying"
