"""LLM access through the official openai SDK: one shared client per (base URL, key), streamed chat calls, and
provider errors translated into the worker's `Retry` / `Fatal`. The only importer of `openai`.

The SDK's own retries are off (`max_retries=0`): the scheduler retries the task, with its backoff or the
provider's Retry-After, and the two would multiply. Its HTTP client is ours (`GuardedTransport`): SSRF
checks at connect time, no redirects, deliberate timeouts and connection limits.
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import httpx2
import openai

from worker.errors import Fatal, Retry
from worker.llm.transport import GuardedTransport, NetworkPolicy, SsrfBlockedError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ("ChatAccumulator", "ChatRequest", "ClientOptions", "ClientPool", "provider_error")

logger = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 3600.0
"""A longer Retry-After is capped (the scheduler's own limit is a day; an hour keeps tasks moving)."""


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """How every provider client is built."""

    allowed_networks: tuple[str, ...] = ()
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 120.0
    max_connections: int = 1024


@dataclass(slots=True)
class ChatRequest:
    """One Chat Completions call (OpenAI wire shapes)."""

    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None
    temperature: float | None = None
    max_tokens: int | None = None

    def body(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.tools:
            extra["tools"] = self.tools
        if self.response_format is not None:
            extra["response_format"] = self.response_format
        if self.temperature is not None:
            extra["temperature"] = self.temperature
        if self.max_tokens is not None:
            extra["max_tokens"] = self.max_tokens
        return extra


@dataclass(slots=True)
class _ToolCallParts:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ChatAccumulator:
    """The answer as it streams in: text (also handed to `on_text`), tool calls, finish reason, usage.

    Kept by the caller, so a canceled call still has everything received so far.
    """

    on_text: Callable[[str], Awaitable[None]] | None = None
    text_parts: list[str] = field(default_factory=list)
    calls: dict[int, _ToolCallParts] = field(default_factory=dict)
    finish_reason: str | None = None
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def tool_calls(self) -> list[tuple[str, str, str]]:
        """(id, name, arguments JSON text) of every call, in index order."""
        return [(c.id or f"call_{i}", c.name, "".join(c.arguments)) for i, c in sorted(self.calls.items())]

    async def feed(self, chunk: Any) -> None:
        """Fold in one `ChatCompletionChunk`."""
        if chunk.model:
            self.model = chunk.model
        if chunk.usage is not None:
            self.prompt_tokens += chunk.usage.prompt_tokens or 0
            self.completion_tokens += chunk.usage.completion_tokens or 0
            self.total_tokens += chunk.usage.total_tokens or 0
        for choice in chunk.choices[:1]:  # one answer (n=1)
            delta = choice.delta
            for call in delta.tool_calls or ():
                parts = self.calls.setdefault(call.index, _ToolCallParts())
                parts.id = call.id or parts.id
                if call.function is not None:
                    parts.name = call.function.name or parts.name
                    if call.function.arguments:
                        parts.arguments.append(call.function.arguments)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
            if delta.content:
                self.text_parts.append(delta.content)
                if self.on_text is not None:
                    await self.on_text(delta.content)


class ClientPool:
    """One `AsyncOpenAI` per (base URL, API key), built on first use and shared by every task."""

    def __init__(self, options: ClientOptions) -> None:
        self._options = options
        self._policy = NetworkPolicy(options.allowed_networks)
        self._clients: dict[tuple[str, str], openai.AsyncOpenAI] = {}

    def client(self, base_url: str, api_key: str) -> openai.AsyncOpenAI:
        key = (base_url, api_key)
        found = self._clients.get(key)
        if found is None:
            found = self._clients[key] = self._build(base_url, api_key)
        return found

    def _build(self, base_url: str, api_key: str) -> openai.AsyncOpenAI:
        o = self._options
        timeout = httpx2.Timeout(connect=o.connect_timeout_s, read=o.read_timeout_s, write=30.0, pool=30.0)
        transport = GuardedTransport(
            self._policy, max_connections=o.max_connections, max_keepalive=min(o.max_connections, 256)
        )
        http = httpx2.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False, trust_env=False)
        # The SDK refuses a missing key; an empty one sends no usable credential (keyless local servers).
        return openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key or "none", max_retries=0, timeout=timeout, http_client=http
        )

    async def stream_chat(self, client: openai.AsyncOpenAI, request: ChatRequest, into: ChatAccumulator) -> None:
        """Run one streamed chat call, folding every chunk into `into`.

        Raises:
            Retry: a transient provider failure (429 with its Retry-After, 5xx, timeout, dropped stream).
            Fatal: a failure a retry cannot fix (refused key, bad request, redirect, blocked address).
        """
        try:
            # Optional fields go in `extra_body`: they are plain OpenAI JSON already (tools, response_format).
            stream = await client.chat.completions.create(
                model=request.model,
                messages=cast("Any", request.messages),
                stream=True,
                stream_options={"include_usage": True},
                extra_body=request.body() or None,
            )
            try:
                async for chunk in stream:
                    await into.feed(chunk)
            finally:
                await stream.close()  # also on cancel: stop reading at once, free the connection
        except openai.OpenAIError as exc:
            raise provider_error(exc) from exc
        if into.finish_reason is None:
            raise Retry(message="the provider's stream ended without a finish reason", error="llm_stream_dropped")

    async def aclose(self) -> None:
        """Close every client's connections (at worker shutdown)."""
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


def provider_error(exc: openai.OpenAIError) -> Retry | Fatal:
    """The task outcome of a provider failure. Messages never quote the provider's body (it may be an internal
    page) nor the key."""
    if isinstance(exc, openai.APITimeoutError):
        return Retry(message="the LLM provider timed out", error="llm_timeout")
    if isinstance(exc, openai.APIConnectionError):
        if _caused_by(exc, SsrfBlockedError):
            return Fatal("the LLM provider's address is not allowed (not public)", error="ssrf_blocked")
        dropped = _caused_by(exc, httpx2.ReadError) or _caused_by(exc, httpx2.RemoteProtocolError)
        if dropped:
            return Retry(message="the LLM provider's stream was cut", error="llm_stream_dropped")
        return Retry(message="cannot connect to the LLM provider", error="llm_unreachable")
    if isinstance(exc, openai.APIStatusError):
        return _status_error(exc.status_code, exc.response.headers)
    return Retry(message="the LLM provider reported an error mid-stream", error="llm_unavailable")


def _status_error(status: int, headers: httpx2.Headers) -> Retry | Fatal:
    if status in (401, 403):
        return Fatal(f"the LLM provider refused the credentials ({status})", error="llm_auth_failed")
    if status == 429:
        return Retry(retry_after_s(headers), f"the LLM provider is rate limiting ({status})", error="llm_rate_limited")
    if 300 <= status < 400:
        return Fatal(
            f"the LLM provider answered a redirect ({status}); not followed", error="upstream_redirect_blocked"
        )
    if status >= 500 or status in (408, 409):
        return Retry(message=f"the LLM provider failed ({status})", error="llm_unavailable")
    return Fatal(f"the LLM provider refused the request ({status})", error="llm_bad_request")


def retry_after_s(headers: httpx2.Headers, *, now: float | None = None) -> float | None:
    """Seconds the provider asks to wait (`retry-after-ms`, `retry-after` in seconds or as an HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    raw = headers.get("retry-after")
    delay: float | None = None
    try:
        if raw_ms is not None:
            delay = float(raw_ms) / 1000
        elif raw is not None:
            delay = float(raw)
    except ValueError:
        delay = None
    if delay is None and raw:
        with_date = email.utils.parsedate_to_datetime(raw) if raw else None
        if with_date is not None:
            delay = with_date.timestamp() - (time.time() if now is None else now)
    if delay is None or not math.isfinite(delay):
        return None
    return min(max(delay, 0.0), MAX_RETRY_AFTER_S)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
