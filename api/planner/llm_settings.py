"""`/llm-settings/me`: one user's provider settings. The API key is write-only: encrypted before it is stored
(crypto.KeyRing, the user id as associated data), reported only as `hasApiKey`. A base URL must pass the SSRF
check (ssrf.py) when it is saved."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from api.db.base import utcnow
from api.db.models.planner import LlmSettingsRow
from api.errors import ServiceUnavailableError, ValidationFailedError
from api.planner.schemas import LlmSettingsView
from api.planner.ssrf import UnsafeUrlError, check_base_url

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from api.planner.crypto import KeyRing
    from api.planner.schemas import LlmSettingsUpdate
    from api.planner.ssrf import AllowList, Resolver

__all__ = ("LlmSettingsService", "settings_view")


def settings_view(row: LlmSettingsRow | None) -> LlmSettingsView | None:
    if row is None:
        return None
    return LlmSettingsView(base_url=row.base_url, model=row.model, has_api_key=row.api_key_enc is not None)


class LlmSettingsService:
    """One per request."""

    def __init__(self, session: AsyncSession, *, keys: KeyRing | None, allow: AllowList, resolve: Resolver) -> None:
        self._session = session
        self._keys = keys
        self._allow = allow
        self._resolve = resolve

    async def get(self, user_id: str) -> LlmSettingsView | None:
        return settings_view(await self._session.get(LlmSettingsRow, user_id))

    async def put(self, user_id: str, data: LlmSettingsUpdate) -> tuple[LlmSettingsView, list[str]]:
        """Create or update (the caller commits); returns the view and the names of the fields changed."""
        row = await self._session.get(LlmSettingsRow, user_id)
        if row is None and data.base_url is msgspec.UNSET:
            raise ValidationFailedError("baseUrl is required the first time", {"field": "baseUrl"})
        changed: list[str] = []
        now = utcnow()
        if row is None:
            row = LlmSettingsRow(user_id=user_id, base_url="", created_at=now, updated_at=now)
            self._session.add(row)
        if data.base_url is not msgspec.UNSET:
            row.base_url = await self._checked_url(data.base_url)
            changed.append("baseUrl")
        if data.model is not msgspec.UNSET:
            row.model = data.model
            changed.append("model")
        if data.api_key is not msgspec.UNSET:
            row.api_key_enc = self._encrypt(user_id, data.api_key) if data.api_key else None
            changed.append("apiKey")
        row.updated_at = now
        await self._session.flush()
        view = settings_view(row)
        if view is None:  # a row was just written
            raise ValidationFailedError("settings not stored")
        return view, changed

    async def delete(self, user_id: str) -> bool:
        row = await self._session.get(LlmSettingsRow, user_id)
        if row is None:
            return False
        await self._session.delete(row)
        await self._session.flush()
        return True

    async def _checked_url(self, raw: str) -> str:
        try:
            return await check_base_url(raw, allow=self._allow, resolve=self._resolve)
        except UnsafeUrlError as exc:
            raise ValidationFailedError(exc.message, {"field": "baseUrl", "reason": exc.reason}) from exc

    def _encrypt(self, user_id: str, api_key: str) -> bytes:
        if self._keys is None:
            raise ServiceUnavailableError("API keys cannot be stored: TASKYARD_API_SECRETS_KEY is not configured")
        return self._keys.encrypt(user_id, api_key)
