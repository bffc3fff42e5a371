"""Which LLM provider a task uses, and the service the built-in LLM handlers share.

A task that carries sealed `credentials` (its owner's settings, from the planner) uses them; any other uses
the worker's default (`TASKYARD_WORKER_LLM_*`). The provider named `offline` is not a model: deterministic
rules (`worker.llm.offline`) that keep every built-in type usable with no LLM configured.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from worker.errors import Fatal
from worker.llm.client import ChatAccumulator, ChatRequest, ClientOptions, ClientPool
from worker.llm.credentials import CredentialsError, decode_key, unseal

if TYPE_CHECKING:
    from worker.context import TaskContext
    from worker.settings import WorkerSettings

__all__ = ("OFFLINE", "LlmService", "Provider")

logger = logging.getLogger(__name__)

OFFLINE = "offline"
"""The provider name (and base URL value) of the deterministic offline provider."""
OFFLINE_MODEL = "offline-rules"
"""The `model` the offline provider reports."""


@dataclass(frozen=True, slots=True)
class Provider:
    """Where one task's LLM calls go. `repr` hides the key."""

    base_url: str
    model: str
    api_key: str = ""

    @property
    def offline(self) -> bool:
        return self.base_url == OFFLINE

    def __repr__(self) -> str:
        return f"Provider(base_url={self.base_url!r}, model={self.model!r}, api_key={'***' if self.api_key else ''})"


class LlmService:
    """The shared client pool plus provider resolution; built once per worker process."""

    def __init__(self, default: Provider, options: ClientOptions, *, seal_key: bytes | None, batch_s: float) -> None:
        self.default = default
        self.batch_s = batch_s
        """How long tokens may gather before a `task/stream` piece (see `TokenBatcher`)."""
        self._seal_key = seal_key
        self._pool = ClientPool(options)

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> LlmService:
        """The service for a worker's `TASKYARD_WORKER_LLM_*` settings (already validated)."""
        raw_key = settings.llm_seal_key.reveal()
        default = Provider(
            base_url=settings.llm_base_url,
            model=settings.llm_model or (OFFLINE_MODEL if settings.llm_base_url == OFFLINE else ""),
            api_key=settings.llm_api_key.reveal(),
        )
        options = ClientOptions(
            allowed_networks=settings.llm_allowed_networks,
            connect_timeout_s=settings.llm_connect_timeout_s,
            read_timeout_s=settings.llm_read_timeout_s,
            max_connections=settings.llm_max_connections,
        )
        seal_key = decode_key(raw_key) if raw_key else None
        return cls(default, options, seal_key=seal_key, batch_s=settings.llm_stream_batch_ms / 1000)

    def provider(self, ctx: TaskContext[Any], *, model: str | None = None) -> Provider:
        """The task's provider: its owner's sealed settings, else the worker's default; `model` overrides.

        Raises:
            Fatal: `llm_key_unavailable` (the sealed settings do not open), `llm_bad_request` (they name an
                unusable URL), `llm_model_missing` (no model anywhere).
        """
        if ctx.credentials is None:
            chosen = self.default
        else:
            try:
                sealed = unseal(self._seal_key, ctx.task_id, ctx.credentials)
            except CredentialsError as exc:
                logger.warning("sealed credentials refused: %s", exc, extra={"task_id": ctx.task_id})
                raise Fatal(f"the task's LLM settings cannot be opened: {exc}", error="llm_key_unavailable") from None
            base_url = sealed.base_url.rstrip("/")
            if base_url != OFFLINE and (urlsplit(base_url).scheme not in ("http", "https") or "@" in base_url):
                raise Fatal("the task's LLM base URL is not an http(s) URL", error="llm_bad_request")
            chosen = Provider(base_url=base_url, model=sealed.model or "", api_key=sealed.api_key or "")
        name = model or chosen.model or (OFFLINE_MODEL if chosen.offline else "")
        if not name:
            raise Fatal("no LLM model is configured for this task", error="llm_model_missing")
        return Provider(base_url=chosen.base_url, model=name, api_key=chosen.api_key)

    async def chat(self, provider: Provider, request: ChatRequest, into: ChatAccumulator) -> None:
        """One streamed chat call on `provider` (see `ClientPool.stream_chat` for the errors it raises)."""
        client = self._pool.client(provider.base_url, provider.api_key)
        await self._pool.stream_chat(client, request, into)

    async def aclose(self) -> None:
        """Close the provider connections."""
        await self._pool.aclose()
