"""Alembic environment: async engines (aiosqlite, psycopg), batch mode for SQLite, metadata from api.db.

The URL comes from the Config (set by `taskyard.migrate`), else `DATABASE_URL`, else the dev SQLite file.
"""

from __future__ import annotations

import asyncio
import logging.config
import os
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.ext.asyncio import create_async_engine

import api.db.models  # noqa: F401 - registers every table on Base.metadata
from api.db.base import Base
from taskyard.migrate import async_database_url, database_url_from_env

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        url = database_url_from_env(os.environ, Path(os.environ.get("TASKYARD_DATA_DIR", ".taskyard")))
    return async_database_url(url)


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table instead
        compare_type=True,
        **kwargs,  # type: ignore[arg-type]
    )


def run_migrations_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


# Any constant works; it only has to be the same for every replica running migrations.
_PG_MIGRATION_LOCK = 0x7461736B79617264  # "taskyard"


def _run_sync(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Replicas starting at once take turns: the lock lasts until this transaction commits,
            # and alembic reads the current revision only after it is held.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        # A caller (e.g. the drift test) handed us a sync connection it already opened.
        _run_sync(connection)
        return
    asyncio.run(_run_async())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
