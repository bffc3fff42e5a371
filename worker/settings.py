"""The worker's fields: one frozen struct, read once in `main()` by the shared loader (`protocol.config`).

`load_settings(environ)` is the only place that reads `TASKYARD_WORKER_*`; the CLI turns its flags
into the same names and merges them over the environment, so both go through one validation.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import msgspec

from protocol.config import AT_LEAST_ONE, NOT_NEGATIVE, POSITIVE, Secret, load_group
from protocol.limits import MAX_HEARTBEAT_TASKS
from worker.errors import WorkerSettingsError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ("DEFAULT_CONCURRENCY", "ENV_PREFIX", "Secret", "WorkerSettings", "env_name", "load_settings")

ENV_PREFIX = "TASKYARD_WORKER_"
"""Every worker variable starts with this."""
DEFAULT_CONCURRENCY = 16
"""Slots when neither the server (an older one) nor `TASKYARD_WORKER_CONCURRENCY` says how many."""
_AT_MOST_HEARTBEAT = msgspec.Meta(le=MAX_HEARTBEAT_TASKS)
"""The heartbeat lists every running task, and it holds at most this many."""


class WorkerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Settings of one worker process (one agent connection)."""

    url: str = "ws://127.0.0.1:8000/ws"
    """`TASKYARD_WORKER_URL`: the API's WebSocket endpoint (ws:// or wss://)."""
    agent_id: str = ""
    """`TASKYARD_WORKER_AGENT_ID`: the agent's id, as created over REST."""
    agent_token: Secret = msgspec.field(default_factory=lambda: Secret(""))
    """`TASKYARD_WORKER_AGENT_TOKEN`: the agent token (shown once at creation)."""
    token_in_query: bool = False
    """`TASKYARD_WORKER_TOKEN_IN_QUERY`: send the token as `?agent_token=` instead of a header.

    Only for peers that strip headers; query strings end up in access logs."""
    concurrency: Annotated[int, AT_LEAST_ONE, _AT_MOST_HEARTBEAT] | None = None
    """`TASKYARD_WORKER_CONCURRENCY`: a local cap on tasks run at once. The agent runs as many as the server's
    record of it allows (`auth/ok` `concurrency`), at most this many; unset: the server's number. With a server
    that does not send one: this, or 16 when unset."""
    drain_timeout_s: Annotated[float, POSITIVE] = 30.0
    """`TASKYARD_WORKER_DRAIN_TIMEOUT_S`: on SIGTERM, how long running tasks may finish before handback."""
    shutdown_ack_timeout_s: Annotated[float, POSITIVE] = 5.0
    """`TASKYARD_WORKER_SHUTDOWN_ACK_TIMEOUT_S`: after handback, how long to wait for the server's acks."""
    handlers: tuple[str, ...] = ()
    """`TASKYARD_WORKER_HANDLERS`: extra registries, comma-separated `module:attr` (a `Registry`)."""
    enable_crash_handler: bool = False
    """`TASKYARD_WORKER_ENABLE_CRASH_HANDLER`: register the `crash` type (`os._exit(1)`), for fault tests."""
    builtins: bool = True
    """`TASKYARD_WORKER_BUILTINS`: register the built-in types (noop, echo, sleep, fail)."""
    backoff_base_s: Annotated[float, POSITIVE] = 0.5
    """`TASKYARD_WORKER_BACKOFF_BASE_S`: first reconnect step."""
    backoff_max_s: Annotated[float, POSITIVE] = 10.0
    """`TASKYARD_WORKER_BACKOFF_MAX_S`: cap of the reconnect step."""
    resend_interval_s: Annotated[float, POSITIVE] = 5.0
    """`TASKYARD_WORKER_RESEND_INTERVAL_S`: resend an unacknowledged result/error after this long."""
    watchdog_s: Annotated[float, NOT_NEGATIVE] = 60.0
    """`TASKYARD_WORKER_WATCHDOG_S`: exit (code 3) when the link shows no sign of life this long (no server
    frame, no connection attempt), so the supervisor restarts a hung worker; at least 3 heartbeat intervals;
    0: off. Must exceed `BACKOFF_MAX_S` + `OPEN_TIMEOUT_S`."""
    open_timeout_s: Annotated[float, POSITIVE] = 10.0
    """`TASKYARD_WORKER_OPEN_TIMEOUT_S`: bound on the handshake plus the `auth/ok` frame."""
    ping_interval_s: Annotated[float, POSITIVE] = 20.0
    """`TASKYARD_WORKER_PING_INTERVAL_S`: WebSocket ping period (finds a dead server)."""
    ping_timeout_s: Annotated[float, POSITIVE] = 20.0
    """`TASKYARD_WORKER_PING_TIMEOUT_S`: close the socket when a pong is this late."""
    progress_backlog: Annotated[int, AT_LEAST_ONE] = 256
    """`TASKYARD_WORKER_PROGRESS_BACKLOG`: progress frames waiting to be written; more are dropped."""
    stream_backlog: Annotated[int, AT_LEAST_ONE] = 1024
    """`TASKYARD_WORKER_STREAM_BACKLOG`: `task/stream` pieces waiting to be written; past it `ctx.stream()` waits."""
    use_env_proxy: bool = False
    """`TASKYARD_WORKER_USE_ENV_PROXY`: honour HTTP(S)_PROXY for the WebSocket (off: connect directly)."""
    log_level: str = "INFO"
    """`TASKYARD_WORKER_LOG_LEVEL`: DEBUG, INFO, WARNING or ERROR (used by `python -m worker`)."""
    llm_base_url: str = "offline"
    """`TASKYARD_WORKER_LLM_BASE_URL`: the default LLM provider of the built-in LLM types: an OpenAI-compatible
    API (`https://api.openai.com/v1`, a vLLM or Ollama URL, ...) or `offline` (deterministic rules, not a model)."""
    llm_model: str = ""
    """`TASKYARD_WORKER_LLM_MODEL`: the default provider's model (required with a base URL)."""
    llm_api_key: Secret = msgspec.field(default_factory=lambda: Secret(""))
    """`TASKYARD_WORKER_LLM_API_KEY`: the default provider's API key (empty: none sent)."""
    llm_seal_key: Secret = msgspec.field(default_factory=lambda: Secret(""))
    """`TASKYARD_WORKER_LLM_SEAL_KEY`: 32 bytes, base64url without padding, the same as the API's
    `TASKYARD_API_LLM_SEAL_KEY`: opens the per-user provider settings sealed into tasks (empty: such tasks fail
    with `llm_key_unavailable`)."""
    llm_allowed_networks: tuple[str, ...] = ()
    """`TASKYARD_WORKER_LLM_ALLOWED_NETWORKS`: comma-separated CIDRs the LLM client may connect to although they
    are not public (loopback, private, link-local); empty: only public addresses (the SSRF guard)."""
    llm_connect_timeout_s: Annotated[float, POSITIVE] = 10.0
    """`TASKYARD_WORKER_LLM_CONNECT_TIMEOUT_S`: bound on resolving and connecting to the provider."""
    llm_read_timeout_s: Annotated[float, POSITIVE] = 120.0
    """`TASKYARD_WORKER_LLM_READ_TIMEOUT_S`: longest silence while waiting for the provider's next bytes."""
    llm_max_connections: Annotated[int, AT_LEAST_ONE] = 1024
    """`TASKYARD_WORKER_LLM_MAX_CONNECTIONS`: open connections per provider client (one client per base URL and
    key); a streaming task holds one for its whole answer, so keep it at least the concurrency."""
    llm_stream_batch_ms: Annotated[float, NOT_NEGATIVE] = 5.0
    """`TASKYARD_WORKER_LLM_STREAM_BATCH_MS`: tokens arriving within this window after a piece was sent are
    batched into the next `task/stream` piece (a token after a quiet spell goes out at once)."""


def _check_handlers(refs: tuple[str, ...]) -> tuple[str, ...]:
    for ref in refs:
        module, sep, attr = ref.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"{ref!r} is not 'module:attr'")
    return refs


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError("must be a ws:// or wss:// URL with a host")
    return url


def _check_llm_base_url(raw: str) -> str:
    url = raw.rstrip("/")
    if url == "offline" or not url:
        return "offline"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise ValueError("must be `offline` or an http(s):// URL with a host and no user info")
    return url


def _check_networks(networks: tuple[str, ...]) -> tuple[str, ...]:
    for network in networks:
        ipaddress.ip_network(network, strict=False)  # ValueError names the bad one
    return networks


def _check_seal_key(key: Secret) -> Secret:
    value = key.reveal()
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (ValueError, binascii.Error) as exc:
        raise ValueError("must be base64url") from exc
    if len(raw) != 32:
        raise ValueError("must be 32 bytes (base64url, no padding)")
    return key


def _check_level(raw: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return level


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "url": _check_url,
    "handlers": _check_handlers,
    "log_level": _check_level,
    "llm_base_url": _check_llm_base_url,
    "llm_seal_key": _check_seal_key,
    "llm_allowed_networks": _check_networks,
}


def env_name(field: str) -> str:
    """The environment variable that sets `field` (e.g. `concurrency` -> `TASKYARD_WORKER_CONCURRENCY`)."""
    return ENV_PREFIX + field.upper()


def load_settings(environ: Mapping[str, str], *, require_credentials: bool = True) -> WorkerSettings:
    """Build the settings from `environ`; unset (or blank) variables keep their defaults.

    Args:
        environ: the process environment, or a plain dict in tests.
        require_credentials: refuse a missing agent id or token (off for `--help`-like uses).

    Raises:
        WorkerSettingsError: listing every variable that is invalid or missing.
    """
    problems: list[str] = []
    settings = load_group(WorkerSettings, environ, problems, env_name=env_name, checks=_CHECKS)
    if require_credentials:
        problems.extend(
            f"{env_name(field)}: required"
            for field in ("agent_id", "agent_token")
            if not environ.get(env_name(field), "").strip()
        )
    if settings.llm_base_url != "offline" and not settings.llm_model:
        problems.append(f"{env_name('llm_model')}: required with {env_name('llm_base_url')}")
    if settings.backoff_max_s < settings.backoff_base_s:
        problems.append(f"{env_name('backoff_max_s')}: must not be below {env_name('backoff_base_s')}")
    if 0 < settings.watchdog_s <= settings.backoff_max_s + settings.open_timeout_s:
        # A reconnect's wait (backoff then handshake) must never look like a hang.
        problems.append(
            f"{env_name('watchdog_s')}: must be 0 or above {env_name('backoff_max_s')} + {env_name('open_timeout_s')}"
        )
    if problems:
        raise WorkerSettingsError(problems)
    return settings
