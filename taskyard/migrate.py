"""Alembic, driven from code: where the scripts live, which URL they run against, upgrade and downgrade.

The CLI (`taskyard migrate`), the dev supervisor and the tests all come through here, so the URL
rules (sync-style URLs are turned into their async drivers) are written once.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic import command
from alembic.config import Config

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = (
    "DEV_DATABASE_FILE",
    "alembic_config",
    "async_database_url",
    "current_revision",
    "database_url_from_env",
    "downgrade",
    "migrations_dir",
    "upgrade",
)

DEV_DATABASE_FILE = "taskyard.db"
"""The SQLite file name inside the dev data folder (`./.taskyard/` by default)."""

_ASYNC_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg2": "postgresql+psycopg",
    "sqlite": "sqlite+aiosqlite",
}


def async_database_url(url: str) -> str:
    """The same URL with an async driver: `postgresql://` -> `postgresql+psycopg://`, `sqlite://` -> aiosqlite."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("a database URL needs a scheme, e.g. postgresql://user@host/db")
    return f"{_ASYNC_DRIVERS.get(scheme, scheme)}://{rest}"


def migrations_dir() -> Path:
    """The Alembic script folder: `TASKYARD_MIGRATIONS_DIR`, else `migrations/` beside the source tree or in cwd."""
    override = os.environ.get("TASKYARD_MIGRATIONS_DIR")
    candidates = [Path(override)] if override else []
    candidates += [Path(__file__).resolve().parent.parent / "migrations", Path.cwd() / "migrations"]
    for candidate in candidates:
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("the migrations folder was not found; set TASKYARD_MIGRATIONS_DIR")


def alembic_config(database_url: str) -> Config:
    """An Alembic Config for `database_url` (no alembic.ini needed; the one in the repo is for the alembic CLI)."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    # Alembic's ini interpolation treats '%' specially; URL-encoded passwords contain it.
    config.set_main_option("sqlalchemy.url", async_database_url(database_url).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.attributes["configure_logging"] = False
    return config


def _run_outside_loop(fn: Callable[[], Any]) -> Any:
    """env.py calls asyncio.run(); inside a running loop (an async test, a lifespan) do that on a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="taskyard-migrate")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision`."""
    _run_outside_loop(lambda: command.upgrade(alembic_config(database_url), revision))


def downgrade(database_url: str, revision: str) -> None:
    """Revert migrations down to `revision` (`base` removes every table)."""
    _run_outside_loop(lambda: command.downgrade(alembic_config(database_url), revision))


def current_revision(database_url: str) -> str | None:
    """The revision the database is at, or None when it has never been migrated."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    async def read() -> str | None:
        engine = create_async_engine(async_database_url(database_url), poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
        finally:
            await engine.dispose()

    value: str | None = _run_outside_loop(lambda: asyncio.run(read()))
    return value


def database_url_from_env(environ: Mapping[str, str], data_dir: Path) -> str:
    """`DATABASE_URL`, else the dev SQLite file in `data_dir`."""
    url = environ.get("DATABASE_URL")
    if url:
        return url
    return f"sqlite+aiosqlite:///{(data_dir / DEV_DATABASE_FILE).resolve()}"
