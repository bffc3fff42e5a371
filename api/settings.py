"""Settings of the API process: read once from a mapping (the environment) plus an optional YAML file.

Nothing here runs at import time. `load_settings(environ)` is called by entry points and tests with a
plain mapping; every field has its docstring underneath, and the docs' table is generated from them.

Environment names: `APP_ENV`, `HTTP_ADDR`, `JWT_SECRET`, `DATABASE_URL`, `REDIS_URL`, `TASKYARD_CONFIG`,
`TASKYARD_REDIS_PREFIX`, `TASKYARD_DATA_DIR`, and `TASKYARD_API_<FIELD>` for every other field (for
example `TASKYARD_API_ACCESS_TOKEN_TTL_S`). The YAML file holds the same fields grouped by section
(`auth: {access_token_ttl_s: 900}`); the environment wins over the file.

Dev JWT secret: with `APP_ENV=dev` and no `JWT_SECRET`, a random secret is kept in
`<data dir>/jwt-secret` (created mode 0600 on first start) so restarts keep sessions; if the file
cannot be written the secret is random per process.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import ipaddress
import itertools
import os
import secrets
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from scheduler.errors import SchedulerSettingsError
from scheduler.settings import SchedulerSettings
from scheduler.settings import load_settings as load_scheduler_settings

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = (
    "ApiSettings",
    "AuthSettings",
    "DatabaseSettings",
    "HttpSettings",
    "OpsSettings",
    "PlannerSettings",
    "RateLimitSettings",
    "RedisSettings",
    "Secret",
    "SettingsError",
    "TasksSettings",
    "WsSettings",
    "load_settings",
)

MIN_JWT_SECRET_BYTES = 32
# Values people paste from examples; refused in production whatever their length.
_KNOWN_DEFAULT_SECRETS = frozenset(
    {"", "secret", "changeme", "change-me", "change_me", "dev", "dev-secret", "jwt-secret", "taskyard"}
)


class SettingsError(ValueError):
    """Bad configuration; the message lists every bad variable, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings: " + "; ".join(problems))


class Secret:
    """A string that never shows itself in repr/str/logs; `.reveal()` is the only way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    host: str = "127.0.0.1"
    """Listen address (from `HTTP_ADDR=host:port`)."""
    port: int = 8000
    """Listen port (from `HTTP_ADDR=host:port`)."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed by CORS and by the WebSocket Origin check (comma-separated in env). Empty: no CORS."""
    request_max_body_size: int = 2 * 1024 * 1024
    """Largest request body accepted, in bytes; larger ones get 413 `payload_too_large`."""
    trusted_proxies: tuple[str, ...] = ()
    """Proxies (IPs or CIDRs, comma-separated) whose `X-Forwarded-For` is believed: the client IP is the
    nearest hop not in this list. Empty: the header is ignored and the socket peer is the client."""
    access_log: bool = True
    """Log one line per request (request id, method, path without query, status, latency)."""


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    url: Secret = field(default_factory=lambda: Secret(""))
    """SQLAlchemy async URL (`DATABASE_URL`); default a SQLite file in the data dir. May hold a password."""
    sql_echo: bool = False
    """Log every SQL statement (debugging only)."""
    db_pool_size: int = 10
    """Connection pool size (ignored by SQLite)."""
    sqlite_busy_timeout_ms: int = 5000
    """SQLite `busy_timeout` pragma: how long a writer waits for the lock."""


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: Secret | None = None
    """Redis URL (`REDIS_URL`). None: the dev supervisor provides one; `create_app` requires it set."""
    prefix: str = "taskyard"
    """Prefix of every Redis key and channel (`TASKYARD_REDIS_PREFIX`)."""
    redis_socket_timeout_s: float = 5.0
    """Socket timeout of the command client (the blocking client has none)."""
    redis_max_connections: int = 100
    """Connection pool size of the command client; a full pool makes callers wait, not fail."""
    redis_blocking_max_connections: int = 2000
    """Pool size of the blocking-read client: each agent connected to this replica holds one for its inbox."""


MAX_USER_CACHE_TTL_S = 300.0
"""The cap on `auth.user_cache_ttl_s`: a staleness bound past a few minutes is no bound."""


@dataclass(frozen=True, slots=True)
class AuthSettings:
    jwt_secret: Secret = field(default_factory=lambda: Secret(""))
    """HS256 key for access tokens (`JWT_SECRET`), at least 32 bytes in production."""
    jwt_issuer: str = "taskyard"
    """`iss` claim written and required."""
    jwt_audience: str = "taskyard-api"
    """`aud` claim written and required."""
    access_token_ttl_s: int = 900
    """Lifetime of an access token."""
    refresh_token_ttl_s: int = 30 * 24 * 3600
    """Absolute lifetime of a refresh token family (rotation never extends it)."""
    jwt_leeway_s: int = 10
    """Clock skew tolerated on exp/nbf/iat."""
    user_cache_ttl_s: float = 2.0
    """Most seconds a replica serves a checked access token from memory: the bound on how stale a role
    change, deactivation, token-version bump, or a revocation Redis lost can be. 0 checks the database
    on every request. Logout and refresh-token reuse still apply at once (they are checked in Redis)."""
    argon2_time_cost: int = 3
    """argon2id iterations (argon2-cffi default)."""
    argon2_memory_cost_kib: int = 65536
    """argon2id memory per hash in KiB (argon2-cffi default, 64 MiB)."""
    argon2_parallelism: int = 4
    """argon2id lanes (argon2-cffi default)."""
    hash_concurrency: int = 0
    """Most password hashes computed at once (bounds memory); 0 means the CPU count."""
    allow_open_registration: bool | None = None
    """Anyone may register. None: true in dev, false in prod (then only admins register users)."""


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    login_failures_per_account_ip: int = 5
    """Failed logins allowed per (email, ip) in the window below; then 429."""
    login_failures_window_s: int = 900
    """Window of the (email, ip) failure count."""
    login_failures_per_account: int = 100
    """Failed logins allowed per account from all sources per hour."""
    login_attempts_per_ip: int = 30
    """Login attempts (any outcome) per ip in the window below."""
    login_attempts_window_s: int = 60
    """Window of the per-ip login attempt count."""
    register_per_ip: int = 10
    """Registrations per ip in the window below."""
    register_window_s: int = 3600
    """Window of the per-ip registration count."""
    task_submit_per_user: int = 600
    """Task submissions per user per window (used by the tasks API)."""
    task_submit_window_s: int = 60
    """Window of the per-user submission count."""


@dataclass(frozen=True, slots=True)
class WsSettings:
    heartbeat_interval_s: float = 3.0
    """Interval the server announces to agents in `auth/ok` and `heartbeat`."""
    heartbeat_timeout_s: float = 10.0
    """An agent silent this long is offline (its presence lease): its tasks are requeued, as a loss."""
    reconnect_grace_s: float = 5.0
    """After an agent's socket closes, how long its tasks wait for it to reconnect before they are requeued."""
    client_max_frame_bytes: int = 65536
    """Largest client frame; larger closes with 1009."""
    agent_max_frame_bytes: int = 1048576
    """Largest agent frame; larger closes with 1009."""
    idle_timeout_s: float = 300.0
    """A client connection with no frame this long is closed (4408)."""
    send_backlog: int = 1000
    """Per-watcher bounded send queue; overflow closes with 4008."""
    client_messages_per_minute: int = 100
    """Control messages a client may send per minute."""
    bad_frames_before_close: int = 10
    """Bad frames within 60 s before the socket is closed with 1008."""
    progress_rate_per_s: float = 20.0
    """Agent progress frames applied per task attempt per second (a burst of up to one second's worth passes at once);
    past it the rest are coalesced (latest wins); 0: all."""
    token_recheck_interval_s: float = 300.0
    """How often an open agent socket re-checks its token in the database (backstop for lost control); 0: never."""
    agent_frame_concurrency: int = 16
    """Agent frames the process handles at once, per kind (accept/progress; result/error); within the Redis pool."""
    agent_status_interval_s: float = 5.0
    """How often each API process polls agent presence for `agent/status` frames (only while someone watches)."""


@dataclass(frozen=True, slots=True)
class TasksSettings:
    reconcile_interval_s: float = 5.0
    """How often the reconciler re-enqueues recent rows Redis does not know and fills lost results; 0: off."""
    reconcile_window_s: float = 600.0
    """How far back (by creation time) the reconciler looks for rows Redis may have missed."""
    reconcile_grace_s: float = 2.0
    """Rows younger than this are left alone (their own request may still be enqueuing them)."""
    recorder_enabled: bool = True
    """Run the recorder (event stream -> database) in this process."""
    recorder_batch_size: int = 200
    """Events the recorder applies per transaction."""
    recorder_claim_idle_s: float = 30.0
    """Events read by a crashed replica and idle this long are taken over by a live recorder."""


@dataclass(frozen=True, slots=True)
class PlannerSettings:
    planner_wait_s: float = 60.0
    """How long the LLM-backed planner routes wait for their task; past it they answer 504 with the job id and the
    result is still stored when the task ends."""
    planner_task_timeout_s: int = 300
    """Run deadline of each planner task (`planner.from_text`, `planner.reply`) on its agent."""
    planner_task_max_attempts: int = 2
    """Attempts of each planner task (agent losses and retryable errors count)."""
    planner_task_priority: int = 7
    """Queue priority (0..9) of planner tasks: a person is waiting on them."""
    planner_capabilities: tuple[str, ...] = ("llm",)
    """Capabilities an agent needs to run planner tasks (comma-separated)."""
    planner_recheck_interval_s: float = 2.0
    """A waiting request re-reads its task this often in case the event that ends it was missed (pub/sub)."""
    planner_apply_interval_s: float = 2.0
    """How often each replica applies finished planner jobs nobody waited for (after a 504); 0: never."""
    planner_stale_job_s: float = 900.0
    """A job whose task never appeared (a crash between the two writes) is failed after this long."""
    planner_llm_per_user: int = 30
    """LLM-backed planner requests (from-text, session messages) per user per window; then 429."""
    planner_llm_window_s: int = 60
    """Window of the per-user LLM request count."""
    secrets_key: Secret | None = None
    """Key(s) encrypting users' LLM API keys at rest: 32 bytes as base64url, comma-separated for rotation (the
    first encrypts, all decrypt). Dev: generated into the data dir. Prod without it: API keys cannot be stored."""
    llm_seal_key: Secret | None = None
    """Key (32 bytes, base64url) sealing a task owner's LLM settings for trusted agents; our LLM workers hold the
    same key. Dev: generated into the data dir. Unset in prod: no credentials are sent (workers use defaults)."""
    llm_task_types: tuple[str, ...] = ("llm.chat", "planner.from_text", "planner.reply")
    """Task types whose `task/submit` to a trusted agent carries the owner's sealed LLM settings."""
    llm_base_url_allowlist: tuple[str, ...] = ()
    """Hosts, IPs or CIDR networks a user's LLM base URL may point to although they are private or loopback (e.g. a
    local model server), each optionally with `:port` (without one, every port of it is allowed). Everything else
    must resolve to public addresses only."""
    llm_credentials_cache_s: float = 5.0
    """How long a replica reuses an owner's decrypted LLM settings and an agent's trusted flag when sealing."""


@dataclass(frozen=True, slots=True)
class OpsSettings:
    jobs_queue: str = "ops"
    """rq queue of the side jobs (purges, counters, webhooks); the Redis prefix is put in front of it."""
    retention_tasks_days: float = 30.0
    """Finished tasks (done, failed, canceled) older than this (by finish time) are deleted with their events;
    0: kept."""
    retention_events_days: float = 7.0
    """Events of finished tasks older than this are deleted (the task row stays); 0: kept."""
    retention_audit_days: float = 180.0
    """Audit rows older than this are deleted; 0: kept."""
    retention_tokens_days: float = 1.0
    """Refresh tokens whose family expired this long ago, and revoked access-token ids past expiry, are deleted."""
    retention_batch_size: int = 500
    """Rows deleted per transaction by a purge (each batch is its own short transaction)."""
    retention_max_batches: int = 200
    """Batches one purge run deletes at most per table; the rest waits for the next run."""
    purge_interval_s: int = 600
    """How often the jobs process enqueues the retention purge (rq cron)."""
    schedules_tick_s: int = 5
    """How often the jobs process fires due schedules (rq cron); a firing is at most this late."""
    schedule_misfire_grace_s: int = 60
    """An occurrence later than this when it is fired counts as missed (the schedule's misfire policy applies)."""
    schedules_per_user: int = 100
    """Most schedules one user may have."""
    schedule_min_interval_s: int = 60
    """Shortest interval of an interval schedule."""
    webhooks_tick_s: int = 2
    """How often the jobs process looks for newly finished tasks to call webhooks for (rq cron)."""
    webhook_max_attempts: int = 6
    """Delivery attempts per finished task (rq retries with backoff: 10 s, 30 s, 2 min, 10 min, 30 min)."""
    webhook_timeout_s: float = 10.0
    """Connect + read timeout of one delivery attempt."""
    webhook_allowlist: tuple[str, ...] = ()
    """Hosts, IPs or CIDR networks (optionally `:port`) a webhook may point to although they are private or
    loopback. Everything else must resolve to public addresses only (checked when saved and at each delivery)."""


@dataclass(frozen=True, slots=True)
class ApiSettings:
    env: Literal["dev", "prod"] = "dev"
    """`APP_ENV`: dev (embedded defaults, open registration) or prod (strict checks)."""
    data_dir: Path = Path(".taskyard")
    """`TASKYARD_DATA_DIR`: where the dev SQLite file and the dev JWT secret live."""
    log_level: str = "INFO"
    """Root log level of the API process."""
    http: HttpSettings = field(default_factory=HttpSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    ratelimit: RateLimitSettings = field(default_factory=RateLimitSettings)
    ws: WsSettings = field(default_factory=WsSettings)
    tasks: TasksSettings = field(default_factory=TasksSettings)
    planner: PlannerSettings = field(default_factory=PlannerSettings)
    ops: OpsSettings = field(default_factory=OpsSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    # The API applies agent frames (retry backoff, stream bounds, TTLs) through the same scripts as the
    # scheduler process, so it reads the same `TASKYARD_SCHEDULER_*` variables (docs/operations.md).

    @property
    def is_prod(self) -> bool:
        return self.env == "prod"

    @property
    def open_registration(self) -> bool:
        if self.auth.allow_open_registration is not None:
            return self.auth.allow_open_registration
        return not self.is_prod

    @property
    def hash_concurrency(self) -> int:
        return self.auth.hash_concurrency or (os.cpu_count() or 1)


_GROUPS: dict[str, type[Any]] = {
    "http": HttpSettings,
    "database": DatabaseSettings,
    "redis": RedisSettings,
    "auth": AuthSettings,
    "ratelimit": RateLimitSettings,
    "ws": WsSettings,
    "tasks": TasksSettings,
    "planner": PlannerSettings,
    "ops": OpsSettings,
}

# Fields whose environment name is not `TASKYARD_API_<FIELD>`.
_SPECIAL_ENV: dict[tuple[str, str], str] = {
    ("database", "url"): "DATABASE_URL",
    ("redis", "url"): "REDIS_URL",
    ("redis", "prefix"): "TASKYARD_REDIS_PREFIX",
    ("auth", "jwt_secret"): "JWT_SECRET",
}


def env_name(group: str, name: str) -> str:
    return _SPECIAL_ENV.get((group, name), f"TASKYARD_API_{name.upper()}")


def _parse(raw: object, hint: Any) -> object:
    """Convert an env string or a YAML value to the field's type."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if raw is None or (isinstance(raw, str) and raw.strip() == ""):
            return None
        return _parse(raw, args[0])
    if hint is Secret:
        return Secret(str(raw))
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off"}:
            return False
        raise ValueError("expected a boolean (true/false)")
    if hint is int:
        if isinstance(raw, bool):
            raise ValueError("expected an integer")
        return int(str(raw).strip())
    if hint is float:
        return float(str(raw).strip())
    if origin is tuple:
        items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
        return tuple(str(i).strip() for i in items if str(i).strip())
    return str(raw)


def _read_yaml(path: str, problems: list[str]) -> dict[str, Any]:
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as exc:
        problems.append(f"TASKYARD_CONFIG: cannot read {path!r} ({type(exc).__name__})")
        return {}
    if not isinstance(data, dict):
        problems.append("TASKYARD_CONFIG: the file must hold a mapping of sections")
        return {}
    return data


def _build_group(
    group: str, cls: type[Any], environ: Mapping[str, str], file_data: Mapping[str, Any], problems: list[str]
) -> Any:
    hints = typing.get_type_hints(cls)
    section = file_data.get(group) or {}
    if not isinstance(section, dict):
        problems.append(f"TASKYARD_CONFIG: section {group!r} must be a mapping")
        section = {}
    unknown = set(section) - {f.name for f in dataclasses.fields(cls)}
    for name in sorted(unknown):
        problems.append(f"TASKYARD_CONFIG: unknown field {group}.{name}")
    values: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        name = env_name(group, f.name)
        if name in environ:
            raw: object = environ[name]
            source = name
        elif f.name in section:
            raw = section[f.name]
            source = f"TASKYARD_CONFIG {group}.{f.name}"
        else:
            continue
        try:
            values[f.name] = _parse(raw, hints[f.name])
        except ValueError as exc:
            problems.append(f"{source}: {exc}")
    return cls(**values)


def _parse_addr(raw: str, problems: list[str]) -> tuple[str, int] | None:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        problems.append("HTTP_ADDR: expected host:port, e.g. 127.0.0.1:8000")
        return None
    return host.strip("[]"), int(port)


def _dev_jwt_secret(data_dir: Path) -> str:
    """The persisted dev secret, created on first use; random per process if the file is not writable."""
    path = data_dir / "jwt-secret"
    try:
        existing = path.read_text(encoding="utf-8").strip()
        if len(existing.encode()) >= MIN_JWT_SECRET_BYTES:
            return existing
    except OSError:
        pass
    value = secrets.token_urlsafe(48)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(value)
    except OSError:
        pass
    return value


def _dev_key(data_dir: Path, name: str) -> str:
    """A persisted dev key (32 random bytes, base64url), like the dev JWT secret."""
    path = data_dir / name
    try:
        existing = path.read_text(encoding="utf-8").strip()
        if _key_problem(existing) is None:
            return existing
    except OSError:
        pass
    value = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(value)
    except OSError:
        pass
    return value


def _key_problem(value: str) -> str | None:
    """None when `value` is 32 bytes in base64url without padding, else what is wrong (never the value)."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (ValueError, binascii.Error):
        return "must be base64url"
    return None if len(raw) == 32 else "must decode to 32 bytes"


def _planner_key(current: Secret | None, name: str, env: str, data_dir: Path, problems: list[str]) -> Secret | None:
    if current is None and env == "dev":
        current = Secret(_dev_key(data_dir, name.replace("_", "-")))
    if current is not None:
        for part in current.reveal().split(","):
            bad = _key_problem(part.strip())
            if bad:
                problems.append(f"{env_name('planner', name)}: {bad}")
    return current


def _planner_keys(planner: PlannerSettings, env: str, data_dir: Path, problems: list[str]) -> PlannerSettings:
    """The two keys, checked; in dev, generated into the data dir when unset (`secrets-key`, `llm-seal-key`)."""
    return dataclasses.replace(
        planner,
        secrets_key=_planner_key(planner.secrets_key, "secrets_key", env, data_dir, problems),
        llm_seal_key=_planner_key(planner.llm_seal_key, "llm_seal_key", env, data_dir, problems),
    )


def _ops_problems(ops: OpsSettings) -> list[str]:
    """Values that would make a side job spin or never run."""
    out: list[str] = []
    positive = ("retention_batch_size", "retention_max_batches", "schedules_per_user", "schedule_min_interval_s")
    for name in positive:
        if getattr(ops, name) < 1:
            out.append(f"{env_name('ops', name)}: must be at least 1")
    not_negative = (
        "retention_tasks_days",
        "retention_events_days",
        "retention_audit_days",
        "retention_tokens_days",
        "purge_interval_s",
        "schedules_tick_s",
        "schedule_misfire_grace_s",
        "webhooks_tick_s",
    )
    for name in not_negative:
        if getattr(ops, name) < 0:
            out.append(f"{env_name('ops', name)}: must not be negative")
    if ops.webhook_max_attempts < 1 or ops.webhook_timeout_s <= 0:
        out.append("TASKYARD_API_WEBHOOK_MAX_ATTEMPTS / TASKYARD_API_WEBHOOK_TIMEOUT_S: must be positive")
    if not ops.jobs_queue.replace("-", "").replace("_", "").isalnum():
        out.append("TASKYARD_API_JOBS_QUEUE: letters, digits, '-' and '_' only")
    return out


def _check_jwt_secret(secret: str) -> str | None:
    if not secret:
        return "JWT_SECRET: required when APP_ENV=prod"
    if secret.strip().lower() in _KNOWN_DEFAULT_SECRETS:
        return "JWT_SECRET: a well-known default value is refused in prod"
    if len(secret.encode()) < MIN_JWT_SECRET_BYTES:
        return f"JWT_SECRET: must be at least {MIN_JWT_SECRET_BYTES} bytes in prod"
    return None


def _proxy_problems(proxies: tuple[str, ...], environ: Mapping[str, str]) -> list[str]:
    """`trusted_proxies` entries must be addresses or networks; the old all-or-nothing switch is refused loudly."""
    problems = []
    if "TASKYARD_API_TRUST_FORWARDED_FOR" in environ:
        problems.append(
            "TASKYARD_API_TRUST_FORWARDED_FOR: removed (it trusted every peer); "
            "set TASKYARD_API_TRUSTED_PROXIES to your proxies' addresses instead"
        )
    for entry in proxies:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            problems.append(f"TASKYARD_API_TRUSTED_PROXIES: {entry!r} is not an IP address or network")
    return problems


def load_settings(environ: Mapping[str, str]) -> ApiSettings:
    """Build the settings from `environ` (and the YAML file it names); raise `SettingsError` listing every problem."""
    problems: list[str] = []
    file_data: dict[str, Any] = {}
    if environ.get("TASKYARD_CONFIG"):
        file_data = _read_yaml(environ["TASKYARD_CONFIG"], problems)

    env_raw = environ.get("APP_ENV", str(file_data.get("env", "dev"))).strip().lower()
    if env_raw not in ("dev", "prod"):
        problems.append("APP_ENV: must be dev or prod")
        env_raw = "dev"
    env: Literal["dev", "prod"] = "prod" if env_raw == "prod" else "dev"
    data_dir = Path(environ.get("TASKYARD_DATA_DIR", str(file_data.get("data_dir", ".taskyard"))))
    log_level = environ.get("TASKYARD_API_LOG_LEVEL", str(file_data.get("log_level", "INFO"))).upper()

    groups = {g: _build_group(g, cls, environ, file_data, problems) for g, cls in _GROUPS.items()}

    http: HttpSettings = groups["http"]
    addr = environ.get("HTTP_ADDR")
    if addr:
        parsed = _parse_addr(addr, problems)
        if parsed:
            http = dataclasses.replace(http, host=parsed[0], port=parsed[1])

    database: DatabaseSettings = groups["database"]
    if not database.url.reveal():
        db_url = f"sqlite+aiosqlite:///{(data_dir / 'taskyard.db').resolve()}"
        database = dataclasses.replace(database, url=Secret(db_url))

    auth: AuthSettings = groups["auth"]
    if not 0 <= auth.user_cache_ttl_s <= MAX_USER_CACHE_TTL_S:
        problems.append(f"TASKYARD_API_USER_CACHE_TTL_S: must be between 0 and {MAX_USER_CACHE_TTL_S:g} seconds")
    if env == "prod":
        bad = _check_jwt_secret(auth.jwt_secret.reveal())
        if bad:
            problems.append(bad)
    elif not auth.jwt_secret.reveal():
        auth = dataclasses.replace(auth, jwt_secret=Secret(_dev_jwt_secret(data_dir)))

    planner = _planner_keys(groups["planner"], env, data_dir, problems)
    problems.extend(_proxy_problems(http.trusted_proxies, environ))
    problems.extend(_ops_problems(groups["ops"]))

    scheduler = SchedulerSettings()
    try:
        scheduler = load_scheduler_settings(environ)
    except SchedulerSettingsError as exc:
        problems.extend(str(exc).splitlines())

    if problems:
        raise SettingsError(problems)
    return ApiSettings(
        scheduler=scheduler,
        env=env,
        data_dir=data_dir,
        log_level=log_level,
        http=http,
        database=database,
        redis=groups["redis"],
        auth=auth,
        ratelimit=groups["ratelimit"],
        ws=groups["ws"],
        tasks=groups["tasks"],
        planner=planner,
        ops=groups["ops"],
    )


def _field_docs(cls: type[Any]) -> dict[str, str]:
    """The docstring written under each field of `cls` (read from the source: Python does not keep them)."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def settings_reference() -> str:
    """A Markdown table of every setting: env name, default, meaning (the docs' configuration table)."""
    lines = ["| env | default | meaning |", "| --- | --- | --- |"]
    top = _field_docs(ApiSettings)
    for name, fixed in (("APP_ENV", "dev"), ("TASKYARD_DATA_DIR", ".taskyard"), ("TASKYARD_API_LOG_LEVEL", "INFO")):
        key = {"APP_ENV": "env", "TASKYARD_DATA_DIR": "data_dir", "TASKYARD_API_LOG_LEVEL": "log_level"}[name]
        lines.append(f"| `{name}` | `{fixed}` | {top.get(key, '')} |")
    lines.append("| `HTTP_ADDR` | `127.0.0.1:8000` | Listen address, host:port. |")
    lines.append("| `TASKYARD_CONFIG` | (none) | Optional YAML file with the same fields by section; env wins. |")
    for group, cls in _GROUPS.items():
        docs = _field_docs(cls)
        for f in dataclasses.fields(cls):
            if group == "http" and f.name in ("host", "port"):
                continue
            default = f.default if f.default is not dataclasses.MISSING else None
            secret = isinstance(default, Secret) or f.name in ("url", "jwt_secret", "secrets_key", "llm_seal_key")
            shown = "(secret)" if secret else repr(default)
            lines.append(f"| `{env_name(group, f.name)}` | `{shown}` | {docs.get(f.name, '')} |")
    return "\n".join(lines) + "\n"
