"""The worker's configuration: one frozen struct, read from a mapping once in `main()`.

`load_settings(environ)` is the only place that reads `TASKYARD_WORKER_*`; the CLI turns its flags
into the same names and merges them over the environment, so both go through one validation.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec

from protocol.limits import MAX_HEARTBEAT_TASKS
from worker.errors import WorkerSettingsError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ("ENV_PREFIX", "Secret", "WorkerSettings", "load_settings")

ENV_PREFIX = "TASKYARD_WORKER_"
"""Every worker variable starts with this."""

_MASK = "**********"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class Secret:
    """A value that shows as `'**********'` in repr and str; `.reveal()` hands it out."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return f"Secret('{_MASK}')"

    def __str__(self) -> str:
        return _MASK


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
    concurrency: int = 16
    """`TASKYARD_WORKER_CONCURRENCY`: tasks run at once (the agent's slots)."""
    drain_timeout_s: float = 30.0
    """`TASKYARD_WORKER_DRAIN_TIMEOUT_S`: on SIGTERM, how long running tasks may finish before handback."""
    shutdown_ack_timeout_s: float = 5.0
    """`TASKYARD_WORKER_SHUTDOWN_ACK_TIMEOUT_S`: after handback, how long to wait for the server's acks."""
    handlers: tuple[str, ...] = ()
    """`TASKYARD_WORKER_HANDLERS`: extra registries, comma-separated `module:attr` (a `Registry`)."""
    enable_crash_handler: bool = False
    """`TASKYARD_WORKER_ENABLE_CRASH_HANDLER`: register the `crash` type (`os._exit(1)`), for fault tests."""
    builtins: bool = True
    """`TASKYARD_WORKER_BUILTINS`: register the built-in types (noop, echo, sleep, fail)."""
    backoff_base_s: float = 0.5
    """`TASKYARD_WORKER_BACKOFF_BASE_S`: first reconnect step."""
    backoff_max_s: float = 10.0
    """`TASKYARD_WORKER_BACKOFF_MAX_S`: cap of the reconnect step."""
    resend_interval_s: float = 5.0
    """`TASKYARD_WORKER_RESEND_INTERVAL_S`: resend an unacknowledged result/error after this long."""
    watchdog_s: float = 60.0
    """`TASKYARD_WORKER_WATCHDOG_S`: exit (code 3) when the link shows no sign of life this long (no server
    frame, no connection attempt), so the supervisor restarts a hung worker; at least 3 heartbeat intervals;
    0: off. Must exceed `BACKOFF_MAX_S` + `OPEN_TIMEOUT_S`."""
    open_timeout_s: float = 10.0
    """`TASKYARD_WORKER_OPEN_TIMEOUT_S`: bound on the handshake plus the `auth/ok` frame."""
    ping_interval_s: float = 20.0
    """`TASKYARD_WORKER_PING_INTERVAL_S`: WebSocket ping period (finds a dead server)."""
    ping_timeout_s: float = 20.0
    """`TASKYARD_WORKER_PING_TIMEOUT_S`: close the socket when a pong is this late."""
    progress_backlog: int = 256
    """`TASKYARD_WORKER_PROGRESS_BACKLOG`: progress frames waiting to be written; more are dropped."""
    stream_backlog: int = 1024
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
    llm_connect_timeout_s: float = 10.0
    """`TASKYARD_WORKER_LLM_CONNECT_TIMEOUT_S`: bound on resolving and connecting to the provider."""
    llm_read_timeout_s: float = 120.0
    """`TASKYARD_WORKER_LLM_READ_TIMEOUT_S`: longest silence while waiting for the provider's next bytes."""
    llm_max_connections: int = 1024
    """`TASKYARD_WORKER_LLM_MAX_CONNECTIONS`: open connections per provider client (one client per base URL and
    key); a streaming task holds one for its whole answer, so keep it at least the concurrency."""
    llm_stream_batch_ms: float = 5.0
    """`TASKYARD_WORKER_LLM_STREAM_BATCH_MS`: tokens arriving within this window after a piece was sent are
    batched into the next `task/stream` piece (a token after a quiet spell goes out at once)."""


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected a boolean (1/0, true/false, yes/no, on/off)")


def _parse_positive_int(raw: str) -> int:
    value = int(raw.strip())
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _parse_concurrency(raw: str) -> int:
    value = _parse_positive_int(raw)
    if value > MAX_HEARTBEAT_TASKS:
        raise ValueError(f"must be at most {MAX_HEARTBEAT_TASKS} (the heartbeat lists every running task)")
    return value


def _parse_positive_float(raw: str) -> float:
    value = float(raw.strip())
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a positive number")
    return value


def _parse_handlers(raw: str) -> tuple[str, ...]:
    refs = tuple(part.strip() for part in raw.split(",") if part.strip())
    for ref in refs:
        module, sep, attr = ref.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"{ref!r} is not 'module:attr'")
    return refs


def _parse_url(raw: str) -> str:
    url = raw.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError("must be a ws:// or wss:// URL with a host")
    return url


def _parse_llm_base_url(raw: str) -> str:
    url = raw.strip().rstrip("/")
    if url == "offline" or not url:
        return "offline"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise ValueError("must be `offline` or an http(s):// URL with a host and no user info")
    return url


def _parse_networks(raw: str) -> tuple[str, ...]:
    networks = tuple(part.strip() for part in raw.split(",") if part.strip())
    for network in networks:
        ipaddress.ip_network(network, strict=False)  # ValueError names the bad one
    return networks


def _parse_seal_key(raw: str) -> Secret:
    value = raw.strip()
    if value:
        try:
            key = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (ValueError, binascii.Error) as exc:
            raise ValueError("must be base64url") from exc
        if len(key) != 32:
            raise ValueError("must be 32 bytes (base64url, no padding)")
    return Secret(value)


def _parse_non_negative_float(raw: str) -> float:
    value = float(raw.strip())
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a number >= 0")
    return value


def _parse_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return level


_FIELDS: dict[str, Callable[[str], Any]] = {
    "url": _parse_url,
    "agent_id": str.strip,
    "agent_token": lambda raw: Secret(raw.strip()),
    "token_in_query": _parse_bool,
    "concurrency": _parse_concurrency,
    "drain_timeout_s": _parse_positive_float,
    "shutdown_ack_timeout_s": _parse_positive_float,
    "handlers": _parse_handlers,
    "enable_crash_handler": _parse_bool,
    "builtins": _parse_bool,
    "backoff_base_s": _parse_positive_float,
    "backoff_max_s": _parse_positive_float,
    "resend_interval_s": _parse_positive_float,
    "watchdog_s": _parse_non_negative_float,
    "open_timeout_s": _parse_positive_float,
    "ping_interval_s": _parse_positive_float,
    "ping_timeout_s": _parse_positive_float,
    "progress_backlog": _parse_positive_int,
    "stream_backlog": _parse_positive_int,
    "use_env_proxy": _parse_bool,
    "log_level": _parse_level,
    "llm_base_url": _parse_llm_base_url,
    "llm_model": str.strip,
    "llm_api_key": lambda raw: Secret(raw.strip()),
    "llm_seal_key": _parse_seal_key,
    "llm_allowed_networks": _parse_networks,
    "llm_connect_timeout_s": _parse_positive_float,
    "llm_read_timeout_s": _parse_positive_float,
    "llm_max_connections": _parse_positive_int,
    "llm_stream_batch_ms": _parse_non_negative_float,
}


def env_name(field: str) -> str:
    """The environment variable that sets `field` (e.g. `concurrency` -> `TASKYARD_WORKER_CONCURRENCY`)."""
    return ENV_PREFIX + field.upper()


def load_settings(environ: Mapping[str, str], *, require_credentials: bool = True) -> WorkerSettings:
    """Build the settings from `environ`; unset variables keep their defaults.

    Args:
        environ: the process environment, or a plain dict in tests.
        require_credentials: refuse a missing agent id or token (off for `--help`-like uses).

    Raises:
        WorkerSettingsError: listing every variable that is invalid or missing.
    """
    values: dict[str, Any] = {}
    problems: list[str] = []
    for field, parse in _FIELDS.items():
        name = env_name(field)
        if name not in environ:
            continue
        try:
            values[field] = parse(environ[name])
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    if require_credentials:
        problems.extend(
            f"{env_name(field)}: required" for field in ("agent_id", "agent_token") if not values.get(field)
        )
    settings = WorkerSettings(**values)
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
