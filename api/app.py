"""The Litestar app factory: wiring only. Clients and engines are built in the lifespan, on the server's loop."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.asyncio
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.di import Provide

from api import wiring
from api.auth.controllers import AuthController
from api.auth.passwords import PasswordService
from api.auth.tokens import AccessTokenCodec, UserCache
from api.console import console_route_handlers
from api.db.session import create_engine, create_sessionmaker, direct_executor, provide_db_session
from api.errors import exception_handlers
from api.health import healthz, readyz
from api.http import RequestContextMiddleware, guard_json_body
from api.http.openapi import openapi_config
from api.ops import wiring as ops_wiring
from api.planner import wiring as planner_wiring
from api.ratelimit import RateLimiter
from api.redis_pool import LeanBlockingPool
from api.settings import SettingsError
from api.tasks.submit_group import SubmitGroup

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from api.settings import ApiSettings

__all__ = ("AuthRuntime", "create_app")

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AuthRuntime:
    """`app.state.auth`: what the auth routes and guards share for the app's life."""

    passwords: PasswordService
    tokens: AccessTokenCodec
    limiter: RateLimiter
    control_channel: str
    users: UserCache
    """Access tokens that passed the database check, for `auth.user_cache_ttl_s`."""


class _PromptWriteConnection(redis.asyncio.Connection):
    """A TCP connection whose sends skip redis-py's per-command `asyncio.wait_for` when they cannot block.

    With `socket_timeout` set, redis-py bounds every send with `wait_for`, a Task per command on 3.11,
    though a command the kernel takes at once never waits. Here the bytes are handed to the transport
    first; only when some stay buffered (or the connection needs connecting or a health check) does the
    send go through redis-py's own path, timeout and error handling included.
    """

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        writer = self._writer
        if (
            writer is None
            or self._reader is None
            or (check_health and self.health_check_interval)
            or writer.transport.is_closing()
            or writer.transport.get_write_buffer_size()
        ):
            await super().send_packed_command(command, check_health)
            return
        if isinstance(command, str):
            command = command.encode()
        writer.writelines([command] if isinstance(command, bytes) else command)
        if writer.transport.get_write_buffer_size():
            await super().send_packed_command(b"", check_health=False)  # drain, under the socket timeout


def _redis_client(url: str, settings: ApiSettings, *, blocking: bool) -> redis.asyncio.Redis:
    # redis-py 8 defaults (RESP3, 5 s timeouts) pinned explicitly; the blocking client has no read timeout.
    # The command pool blocks when full (a burst waits for a connection instead of failing a heartbeat);
    # the blocking-read pool is sized for one held connection per connected agent.
    options: dict[str, Any] = {"protocol": 3, "legacy_responses": True, "decode_responses": False}
    if url.startswith("redis://"):  # TLS and unix sockets keep redis-py's classes
        options["connection_class"] = _PromptWriteConnection
    if blocking:
        pool = redis.asyncio.ConnectionPool.from_url(
            url,
            socket_timeout=None,
            socket_connect_timeout=5.0,
            max_connections=settings.redis.redis_blocking_max_connections,
            **options,
        )
    else:
        pool = LeanBlockingPool.from_url(
            url,
            socket_timeout=settings.redis.redis_socket_timeout_s,
            socket_connect_timeout=5.0,
            max_connections=settings.redis.redis_max_connections,
            timeout=settings.redis.redis_socket_timeout_s,
            **options,
        )
    return redis.asyncio.Redis.from_pool(pool)


def _scheduler_client(app: Litestar, settings: ApiSettings) -> Any:
    try:
        from scheduler.client import SchedulerClient
    except ModuleNotFoundError as exc:  # while scheduler/client.py is being written; auth does not need it
        if exc.name != "scheduler.client":
            raise
        logger.warning("scheduler.client is not available; app.state.scheduler is None")
        return None
    return SchedulerClient(
        app.state.redis,
        prefix=settings.redis.prefix,
        settings=settings.scheduler,
        blocking_redis=app.state.redis_blocking,
    )


def _core_lifespan(settings: ApiSettings, redis_url: str) -> Any:
    @asynccontextmanager
    async def core(app: Litestar) -> AsyncIterator[None]:
        from scheduler.keys import Keys

        engine = create_engine(settings.database)
        app.state.settings = settings
        app.state.db_engine = engine
        app.state.db = create_sessionmaker(engine)
        app.state.db_direct = direct_executor(engine)
        app.state.redis = _redis_client(redis_url, settings, blocking=False)
        app.state.redis_blocking = _redis_client(redis_url, settings, blocking=True)
        try:
            app.state.scheduler = _scheduler_client(app, settings)
            app.state.submit_group = (
                None
                if app.state.db_direct is None or app.state.scheduler is None
                else SubmitGroup(app.state.db_direct, lambda: app.state.scheduler)
            )
            auth = settings.auth
            app.state.auth = AuthRuntime(
                passwords=PasswordService(
                    time_cost=auth.argon2_time_cost,
                    memory_cost_kib=auth.argon2_memory_cost_kib,
                    parallelism=auth.argon2_parallelism,
                    concurrency=settings.hash_concurrency,
                ),
                tokens=AccessTokenCodec(auth),
                limiter=RateLimiter(app.state.redis, settings.redis.prefix),
                control_channel=Keys(settings.redis.prefix).control_channel(),
                users=UserCache(auth.user_cache_ttl_s),
            )
            logger.info("api started env=%s", settings.env)
            yield
        finally:
            group: SubmitGroup | None = getattr(app.state, "submit_group", None)
            if group is not None:  # rows answered and committed, not yet enqueued
                await group.drain()
            await app.state.redis_blocking.aclose()
            await app.state.redis.aclose()
            if app.state.db_direct is not None:
                await app.state.db_direct.close()
            await engine.dispose()

    return core


def create_app(settings: ApiSettings) -> Litestar:
    """The API app. `REDIS_URL` must be set (the dev supervisor sets it to its embedded server)."""
    if settings.redis.url is None:
        raise SettingsError(["REDIS_URL: required to run the API (the dev supervisor provides one)"])
    cors = None
    if settings.http.cors_origins:
        cors = CORSConfig(
            allow_origins=list(settings.http.cors_origins),
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
            allow_credentials=False,
        )
    app = Litestar(
        route_handlers=[
            healthz,
            readyz,
            AuthController,
            *wiring.route_handlers(),
            *planner_wiring.route_handlers(),
            *ops_wiring.route_handlers(),
        ],
        # The planner's lifespan comes last: it uses the /ws session registry.
        lifespan=[
            _core_lifespan(settings, settings.redis.url.reveal()),
            *wiring.lifespans(),
            *planner_wiring.lifespans(),
        ],
        dependencies={"db_session": Provide(provide_db_session), **wiring.dependencies()},
        exception_handlers=exception_handlers(),
        middleware=[guard_json_body(settings.http.request_max_body_size)],
        cors_config=cors,
        openapi_config=openapi_config("0.1.0"),
        request_max_body_size=settings.http.request_max_body_size,
        logging_config=None,
        debug=False,
    )
    for handler in console_route_handlers():  # the web console (api/console), / redirecting to it
        app.register(handler)
    # Wrap the whole handler (routing included) so 404/405 carry the request id and get logged too.
    app.asgi_handler = RequestContextMiddleware(app.asgi_handler, access_log=settings.http.access_log)
    return app
