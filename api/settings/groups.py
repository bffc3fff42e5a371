"""The API's settings fields, by group; `api.settings.loader` reads them (through `protocol.config`).

Each field has its docstring underneath: the configuration tables of docs/operations.md are generated from them
(`make docs`). Bounds are part of the types (`Annotated[int, AT_LEAST_ONE]`); checks across fields are the
loader's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from protocol.config import AT_LEAST_ONE, NOT_NEGATIVE, POSITIVE, Secret
from scheduler.settings import SchedulerSettings

__all__ = (
    "GROUPS",
    "MAX_REVOCATION_CHECK_INTERVAL_S",
    "MAX_USER_CACHE_TTL_S",
    "ApiSettings",
    "AuthSettings",
    "DatabaseSettings",
    "HttpSettings",
    "OpsSettings",
    "PlannerSettings",
    "RateLimitSettings",
    "RedisSettings",
    "TasksSettings",
    "WsSettings",
    "env_name",
)


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
    processes: Annotated[int, AT_LEAST_ONE] = 1
    """API processes sharing the listen port (`taskyard api`): each is a full replica with its own connections
    and background loops. Use up to the cores the API may take; above 1 needs PostgreSQL."""


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
_USER_CACHE_CAP = msgspec.Meta(le=MAX_USER_CACHE_TTL_S)
MAX_REVOCATION_CHECK_INTERVAL_S = 10.0
"""The cap on `auth.revocation_check_interval_s`: a revocation must reach every replica within seconds."""
_REVOCATION_CHECK_CAP = msgspec.Meta(le=MAX_REVOCATION_CHECK_INTERVAL_S)


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
    user_cache_ttl_s: Annotated[float, NOT_NEGATIVE, _USER_CACHE_CAP] = 2.0
    """Most seconds a replica serves a checked access token from memory: the bound on how stale a role
    change, deactivation, token-version bump, or a revocation Redis lost can be. 0 checks the database
    on every request. Logout and refresh-token reuse still apply at once (they are checked in Redis; a
    keyless task submit within `auth.revocation_check_interval_s`)."""
    revocation_check_interval_s: Annotated[float, NOT_NEGATIVE, _REVOCATION_CHECK_CAP] = 1.0
    """Most seconds a replica admits a keyless `POST /api/tasks` on an access token without checking its
    revocation in Redis (and counts that submit against a rate-limit lease in memory): the bound on how
    late a logout, refresh-token reuse or user disable stops such submits (the replica that handles a
    logout or a reuse stops them at once). 0 checks Redis on every submit."""
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
    """Agent frames the process handles at once, per kind (accept/stream; the Redis step of result/error); within
    the Redis pool. Progress frames have a lane of their own of 1,024 (a loop turn's frames share one script call)."""
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
    """rq queue of the side jobs (purges, schedules, webhooks); the Redis prefix is put in front of it."""
    retention_tasks_days: Annotated[float, NOT_NEGATIVE] = 30.0
    """Finished tasks (done, failed, canceled) older than this (by finish time) are deleted with their events;
    0: kept."""
    retention_events_days: Annotated[float, NOT_NEGATIVE] = 7.0
    """Events of finished tasks older than this are deleted (the task row stays); 0: kept."""
    retention_audit_days: Annotated[float, NOT_NEGATIVE] = 180.0
    """Audit rows older than this are deleted; 0: kept."""
    retention_tokens_days: Annotated[float, NOT_NEGATIVE] = 1.0
    """Refresh tokens whose family expired this long ago, and revoked access-token ids past expiry, are deleted."""
    retention_batch_size: Annotated[int, AT_LEAST_ONE] = 500
    """Rows deleted per transaction by a purge (each batch is its own short transaction)."""
    retention_max_batches: Annotated[int, AT_LEAST_ONE] = 200
    """Batches one purge run deletes at most per table; the rest waits for the next run."""
    purge_interval_s: Annotated[int, NOT_NEGATIVE] = 600
    """How often the jobs process enqueues the retention purge (rq cron)."""
    schedules_tick_s: Annotated[int, NOT_NEGATIVE] = 5
    """How often the jobs process fires due schedules (rq cron); a firing is at most this late."""
    schedule_misfire_grace_s: Annotated[int, NOT_NEGATIVE] = 60
    """An occurrence later than this when it is fired counts as missed (the schedule's misfire policy applies)."""
    schedules_per_user: Annotated[int, AT_LEAST_ONE] = 100
    """Most schedules one user may have."""
    schedule_min_interval_s: Annotated[int, AT_LEAST_ONE] = 60
    """Shortest interval of an interval schedule."""
    webhooks_tick_s: Annotated[int, NOT_NEGATIVE] = 2
    """How often the jobs process looks for newly finished tasks to call webhooks for (rq cron)."""
    webhook_max_attempts: Annotated[int, AT_LEAST_ONE] = 6
    """Delivery attempts per finished task (rq retries with backoff: 10 s, 30 s, 2 min, 10 min, 30 min)."""
    webhook_timeout_s: Annotated[float, POSITIVE] = 10.0
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


GROUPS: dict[str, type[Any]] = {
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
    """The variable that sets `group.name`: `TASKYARD_API_<NAME>` unless it has a name of its own."""
    return _SPECIAL_ENV.get((group, name), f"TASKYARD_API_{name.upper()}")
