"""The owner's LLM settings, sealed into `task/submit` for trusted agents at the moment of delivery.

`submit_payload()` is the one call `api.ws.agent_session` makes before it sends a submit: for a task type in
`llm_task_types`, sent to an agent an admin marked `trusted`, whose owner has LLM settings, it returns the
payload with `credentials` added (crypto.seal_credentials, bound to the task id). Anything else goes out as it
came. So the key is decrypted only here, in memory, and leaves the API only sealed, on the agent's socket: never
in a task's input, a Redis key or value, an event or a log line. Owners' settings and agents' trusted flags are
cached for `llm_credentials_cache_s`. Delivery never fails because of this step: when the settings cannot be
read or decrypted, the submit goes out without credentials and the worker uses its own defaults (logged, by ids).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import msgspec
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from api.db.models.agents import Agent
from api.db.models.planner import LlmSettingsRow
from api.db.models.tasks import Task
from api.planner.crypto import seal_credentials
from api.planner.errors import SecretUnavailableError

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from api.planner.crypto import KeyRing
    from scheduler.types import InboxEntry

__all__ = ("CredentialSealer", "OwnerCredentials")

logger = logging.getLogger(__name__)

MAX_CACHED = 10_000
_V = TypeVar("_V")


class _SubmitHead(msgspec.Struct):
    """The fields of a stored `task/submit` payload this step reads (the rest is passed through untouched)."""

    type: str
    credentials: str | None = None


_HEAD = msgspec.json.Decoder(_SubmitHead)


@dataclass(frozen=True, slots=True)
class OwnerCredentials:
    """An owner's settings in plain text, held only in this process' memory for a few seconds."""

    base_url: str
    api_key: str | None
    model: str | None

    def __repr__(self) -> str:
        return f"OwnerCredentials(base_url={self.base_url!r}, api_key={'***' if self.api_key else None}, ...)"


class CredentialSealer:
    """One per process; shared by every agent socket."""

    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        *,
        seal_key: bytes | None,
        keys: KeyRing | None,
        task_types: tuple[str, ...],
        cache_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._seal_key = seal_key
        self._keys = keys
        self._types = frozenset(task_types)
        self._cache_s = cache_s
        self._clock = clock
        self._trusted: dict[str, tuple[float, bool]] = {}
        self._owners: dict[str, tuple[float, OwnerCredentials | None]] = {}

    async def submit_payload(self, agent_id: str, entry: InboxEntry) -> bytes:
        """The submit payload to send to `agent_id`: with the owner's sealed settings when due, else unchanged."""
        payload = entry.payload_json
        if self._seal_key is None:
            return payload
        try:
            head = _HEAD.decode(payload)
        except msgspec.DecodeError:
            return payload
        if head.type not in self._types or head.credentials is not None:
            return payload
        try:
            if not await self._is_trusted(agent_id):
                return payload
            owner = await self._owner_of(entry.task_id)
            creds = await self._credentials(owner) if owner is not None else None
        except SQLAlchemyError:
            logger.warning("credentials not attached (database error) task_id=%s agent_id=%s", entry.task_id, agent_id)
            return payload
        if creds is None:
            return payload
        sealed = seal_credentials(
            self._seal_key, entry.task_id, base_url=creds.base_url, api_key=creds.api_key, model=creds.model
        )
        # The stored payload is one JSON object: add the field before its closing brace, leaving the rest as is.
        body = payload.rstrip()
        return body[:-1] + b',"credentials":' + msgspec.json.encode(sealed) + b"}"

    def forget_owner(self, user_id: str) -> None:
        """Drop a cached owner (their settings just changed on this replica)."""
        self._owners.pop(user_id, None)

    def _fresh(self, stamp: float) -> bool:
        return self._clock() - stamp < self._cache_s

    async def _is_trusted(self, agent_id: str) -> bool:
        cached = self._trusted.get(agent_id)
        if cached is not None and self._fresh(cached[0]):
            return cached[1]
        async with self._db() as session:
            trusted = bool(await session.scalar(select(Agent.trusted).where(Agent.id == agent_id)))
        self._remember(self._trusted, agent_id, trusted)
        return trusted

    async def _owner_of(self, task_id: str) -> str | None:
        async with self._db() as session:
            owner: str | None = await session.scalar(select(Task.owner_id).where(Task.id == task_id))
        return owner

    async def _credentials(self, user_id: str) -> OwnerCredentials | None:
        cached = self._owners.get(user_id)
        if cached is not None and self._fresh(cached[0]):
            return cached[1]
        async with self._db() as session:
            row = await session.get(LlmSettingsRow, user_id)
        creds: OwnerCredentials | None = None
        if row is not None:
            api_key: str | None = None
            if row.api_key_enc is not None:
                try:
                    if self._keys is None:
                        raise SecretUnavailableError()
                    api_key = self._keys.decrypt(user_id, row.api_key_enc)
                except SecretUnavailableError:
                    logger.warning("an owner's stored API key does not decrypt; sent without it user_id=%s", user_id)
            creds = OwnerCredentials(base_url=row.base_url, api_key=api_key, model=row.model)
        self._remember(self._owners, user_id, creds)
        return creds

    def _remember(self, cache: dict[str, tuple[float, _V]], key: str, value: _V) -> None:
        if len(cache) >= MAX_CACHED:
            cache.clear()
        cache[key] = (self._clock(), value)
