"""A user's completion webhook (`/api/webhook`) and its delivery log. Delivery itself is `api.webhooks.delivery`.

The signing secret is generated here (32 random bytes, shown once: when the webhook is created or the secret
rotated) and stored encrypted with the API's secrets key, bound to the user.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import TYPE_CHECKING, Annotated

import msgspec
from sqlalchemy import delete, func, select

from api.db.base import utcnow
from api.db.models.webhooks import Webhook, WebhookDelivery
from api.errors import ConflictError, NotFoundError, ValidationFailedError
from api.planner.crypto import KeyRing
from api.planner.ssrf import MAX_URL_LENGTH, AllowList, UnsafeUrlError, check_base_url, system_resolver

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from api.auth.identity import CurrentUser
    from api.settings import ApiSettings

__all__ = ("DeliveryPage", "WebhookIn", "WebhookService", "WebhookView", "check_url", "keyring", "url_allowlist")

Url = Annotated[str, msgspec.Meta(min_length=8, max_length=MAX_URL_LENGTH)]


class WebhookIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    url: Url | None = None
    """http(s) URL called with a signed POST when any of your tasks ends (no query string). None: only tasks
    submitted with their own `callbackUrl` are called back (the webhook then only holds the signing secret)."""
    active: bool = True
    rotate_secret: bool = False
    """Issue a new signing secret (the answer shows it once)."""


class WebhookView(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    active: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    url: str | None = None
    secret: str | None = None
    """Only in the answer that created it: keep it, it is never shown again."""


class DeliveryView(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    id: str
    task_id: str
    url: str
    status: str
    """pending | retrying | delivered | failed | refused | canceled."""
    attempts: int
    created_at: dt.datetime
    updated_at: dt.datetime
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: dt.datetime | None = None


class DeliveryPage(msgspec.Struct, rename="camel", kw_only=True):
    items: list[DeliveryView]
    total: int
    page: int
    page_size: int


def keyring(settings: ApiSettings) -> KeyRing | None:
    key = settings.planner.secrets_key
    return KeyRing.parse(key.reveal()) if key is not None else None


def url_allowlist(settings: ApiSettings) -> AllowList:
    return AllowList.parse(settings.ops.webhook_allowlist)


async def check_url(settings: ApiSettings, raw: str, field: str) -> str:
    """The URL when it may be called (public, or allow-listed by the operator), else a 422."""
    try:
        return await check_base_url(raw, allow=url_allowlist(settings), resolve=system_resolver)
    except UnsafeUrlError as exc:
        raise ValidationFailedError(exc.message, {"field": field, "reason": exc.reason}) from exc


def _view(row: Webhook, secret: str | None = None) -> WebhookView:
    return WebhookView(
        url=row.url, active=row.active, created_at=row.created_at, updated_at=row.updated_at, secret=secret
    )


class WebhookService:
    def __init__(self, session: AsyncSession, settings: ApiSettings) -> None:
        self._session = session
        self._settings = settings

    async def get(self, user: CurrentUser) -> WebhookView:
        row = await self._session.get(Webhook, user.id)
        if row is None:
            raise NotFoundError("no webhook configured")
        return _view(row)

    async def put(self, user: CurrentUser, data: WebhookIn) -> tuple[WebhookView, bool]:
        ring = keyring(self._settings)
        if ring is None:
            raise ConflictError("webhooks need the secrets key (TASKYARD_API_SECRETS_KEY) on this deployment")
        url = await check_url(self._settings, data.url, "url") if data.url is not None else None
        row = await self._session.get(Webhook, user.id)
        now = utcnow()
        secret: str | None = None
        created = row is None
        if row is None or data.rotate_secret:
            secret = "whsec_" + secrets.token_urlsafe(32)
        if row is None:
            assert secret is not None
            row = Webhook(user_id=user.id, url=url, secret_enc=ring.encrypt(user.id, secret), active=data.active)
            row.created_at = now
            self._session.add(row)
        else:
            row.url = url
            row.active = data.active
            if secret is not None:
                row.secret_enc = ring.encrypt(user.id, secret)
        row.updated_at = now
        await self._session.commit()
        return _view(row, secret), created

    async def delete(self, user: CurrentUser) -> None:
        result = await self._session.execute(delete(Webhook).where(Webhook.user_id == user.id))
        if not result.rowcount:  # type: ignore[attr-defined]
            raise NotFoundError("no webhook configured")
        await self._session.commit()

    async def deliveries(self, user: CurrentUser, *, page: int, page_size: int) -> DeliveryPage:
        where = WebhookDelivery.user_id == user.id
        total = int(await self._session.scalar(select(func.count()).select_from(WebhookDelivery).where(where)) or 0)
        query = (
            select(WebhookDelivery)
            .where(where)
            .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
            .limit(page_size)
            .offset((page - 1) * page_size)
        )
        items = [
            DeliveryView(
                id=d.id,
                task_id=d.task_id,
                url=d.url,
                status=d.status,
                attempts=d.attempts,
                created_at=d.created_at,
                updated_at=d.updated_at,
                last_status_code=d.last_status_code,
                last_error=d.last_error,
                delivered_at=d.delivered_at,
            )
            for d in (await self._session.execute(query)).scalars()
        ]
        return DeliveryPage(items=items, total=total, page=page, page_size=page_size)
