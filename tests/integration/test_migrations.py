"""Alembic history on SQLite and PostgreSQL: upgrade to head, downgrade to base, and no drift from the models."""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import api.db.models  # noqa: F401 - registers every table
from api.db.base import Base
from taskyard.migrate import alembic_config, current_revision, downgrade, upgrade
from tests.conftest import create_postgres_database, drop_postgres_database, private_postgres_database

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

AUTH_TABLES = {"users", "refresh_tokens", "revoked_tokens", "audit_log"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def blank_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind, private to the test (these tests drop every table)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"
        return
    admin_url: str = request.getfixturevalue("postgres_admin_url")
    with private_postgres_database(admin_url, "taskyard_test_mig") as url:
        yield url


def _head() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def _tables(url: str) -> set[str]:
    async def read() -> set[str]:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                return set(await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names()))
        finally:
            await engine.dispose()

    return asyncio.run(read())


def _drift(url: str) -> list[Any]:
    async def read() -> list[Any]:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:

                def compare(sync: sa.Connection) -> list[Any]:
                    context = MigrationContext.configure(
                        sync, opts={"compare_type": True, "render_as_batch": True, "target_metadata": Base.metadata}
                    )
                    return list(compare_metadata(context, Base.metadata))

                return await conn.run_sync(compare)
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_history_is_linear_and_starts_with_auth() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1, "two heads: a revision's down_revision is wrong"
    base = script.get_base()
    assert base == "0001_auth"


def test_upgrade_to_head_and_downgrade_to_base(blank_database: str) -> None:
    assert current_revision(blank_database) is None
    upgrade(blank_database, "head")
    assert current_revision(blank_database) == _head()
    assert set(Base.metadata.tables) <= _tables(blank_database)
    assert _tables(blank_database) >= AUTH_TABLES

    downgrade(blank_database, "base")
    assert current_revision(blank_database) is None
    assert _tables(blank_database) <= {"alembic_version"}

    # And back up again: the downgrades left nothing behind that blocks a second upgrade.
    upgrade(blank_database, "head")
    assert current_revision(blank_database) == _head()


def test_each_revision_steps_up_and_down(blank_database: str) -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    revisions = [rev.revision for rev in reversed(list(script.walk_revisions()))]
    for revision in revisions:
        upgrade(blank_database, revision)
        assert current_revision(blank_database) == revision
    for revision in reversed(revisions[:-1]):
        downgrade(blank_database, "-1")
        assert current_revision(blank_database) == revision
    downgrade(blank_database, "-1")
    assert current_revision(blank_database) is None


def test_models_match_head_no_autogenerate_drift(blank_database: str) -> None:
    upgrade(blank_database, "head")
    diff = _drift(blank_database)
    assert diff == [], f"the models and the migrations disagree; write a migration for: {diff}"


def test_auth_revision_alone_matches_auth_models(blank_database: str) -> None:
    """0001 by itself creates exactly the auth tables, so later revisions never patch it silently."""
    upgrade(blank_database, "0001_auth")
    assert _tables(blank_database) - {"alembic_version"} == AUTH_TABLES
    auth_only = sa.MetaData()
    for name in AUTH_TABLES:
        Base.metadata.tables[name].to_metadata(auth_only)

    async def read() -> list[Any]:
        engine = create_async_engine(blank_database, poolclass=NullPool)
        try:
            async with engine.connect() as conn:

                def compare(sync: sa.Connection) -> list[Any]:
                    context = MigrationContext.configure(sync, opts={"compare_type": True})
                    return [d for d in compare_metadata(context, auth_only) if "alembic_version" not in repr(d)]

                return await conn.run_sync(compare)
        finally:
            await engine.dispose()

    assert asyncio.run(read()) == []


@pytest.mark.postgres
def test_replicas_migrating_at_once_take_turns(postgres_admin_url: str, tmp_path: Path) -> None:
    """Several API pods run `taskyard migrate` at start (separate processes); the advisory lock makes that safe."""
    import os
    import subprocess
    import sys

    name = f"taskyard_test_mig_{secrets.token_hex(5)}"
    url = create_postgres_database(postgres_admin_url, name)
    env = {**os.environ, "DATABASE_URL": url, "TASKYARD_DATA_DIR": str(tmp_path), "APP_ENV": "dev"}
    try:
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "taskyard", "migrate"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        for process in processes:
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
            assert f"database at revision: {_head()}" in out
        assert current_revision(url) == _head()
    finally:
        drop_postgres_database(postgres_admin_url, name)
