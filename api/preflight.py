"""Before a process starts serving: are the database and Redis its settings name usable?

The entry points (`taskyard api`, `taskyard jobs`, the database chores) call these so that a wrong URL or a
service that is down ends in one line for the operator instead of a traceback from deep inside a lifespan.
Messages never carry a password: URLs are shown redacted and driver errors name hosts, not credentials.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from api.settings import ApiSettings

__all__ = (
    "ConfigurationError",
    "PreflightError",
    "ServiceUnreachableError",
    "check_database",
    "check_redis",
    "check_services",
    "exit_code",
)

_TIMEOUT_S = 5.0


class PreflightError(Exception):
    """A service the settings name cannot be used; the message is one line, safe to print."""


class ConfigurationError(PreflightError):
    """A URL that cannot work whatever the network does: no such driver or scheme, unparsable."""


class ServiceUnreachableError(PreflightError):
    """The URL is fine but the service did not answer (down, wrong host or port, refused login)."""


def _redact(url: str) -> str:
    """The URL with its password shown as `***`."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.partition("://")[0] + "://..."


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


async def check_database(url: str) -> None:
    """Open one connection to the async-driver URL `url` and run `SELECT 1`.

    Raises:
        ConfigurationError: the URL cannot be parsed or names a driver that is not installed.
        ServiceUnreachableError: the database did not accept a connection.
    """
    try:
        engine = create_async_engine(url, poolclass=NullPool)
    except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as exc:
        raise ConfigurationError(f"invalid settings: DATABASE_URL: {_first_line(exc)}") from exc
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (DBAPIError, OSError) as exc:
        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        raise ServiceUnreachableError(f"cannot reach the database at {_redact(url)}: {_first_line(cause)}") from exc
    finally:
        await engine.dispose()


async def check_redis(settings: ApiSettings) -> None:
    """PING the Redis the settings name.

    Raises:
        ConfigurationError: REDIS_URL is missing or malformed.
        ServiceUnreachableError: Redis did not answer.
    """
    if settings.redis.url is None:
        raise ConfigurationError("invalid settings: REDIS_URL: required (the dev supervisor provides one)")
    url = settings.redis.url.reveal()
    try:
        client = Redis.from_url(url, socket_timeout=_TIMEOUT_S, socket_connect_timeout=_TIMEOUT_S)
    except ValueError as exc:
        raise ConfigurationError(f"invalid settings: REDIS_URL: {_first_line(exc)}") from exc
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        raise ServiceUnreachableError(f"cannot reach Redis at {_redact(url)}: {_first_line(exc)}") from exc
    finally:
        await client.aclose()


async def check_services(settings: ApiSettings, *, redis: bool = True, database: bool = True) -> None:
    """The database first (its URL is the likelier typo), then Redis; raises the first PreflightError."""
    if database:
        await check_database(settings.database.url.reveal())
    if redis:
        await check_redis(settings)


def exit_code(exc: Exception) -> int:
    """The exit code for a setup failure: 1 for a service that did not answer (a retry may help), else 2 (bad
    settings or a URL that cannot work)."""
    return 1 if isinstance(exc, ServiceUnreachableError) else 2
