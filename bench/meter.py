"""Cost of a measured window, read from outside the system: CPU per process role, Redis commands, SQL work.

* CPU: /proc times of every process of each role (API, scheduler, workers, Redis, the PostgreSQL
  backends serving the bench's database, the bench's own client processes).
* Redis: `INFO commandstats` deltas of the run's private redis-server (commands called inside
  Lua scripts are counted there too, under their own names).
* PostgreSQL: `pg_stat_database` / `pg_stat_user_tables` deltas of the run's own database. PostgreSQL
  15 publishes a backend's counters up to 10 s after the fact when that backend goes idle, so a
  window is closed by `settle_pg()` before the last snapshot; the bench's own connections are named
  `taskyard-bench` and their work is kept out of the counts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from bench.cpu import cpu_by_pid, group_pids

if TYPE_CHECKING:
    from bench.services import PgDatabase

# PGSTAT_IDLE_INTERVAL (10 s) plus a margin: the longest an idle backend keeps its counters to itself.
PG_STATS_FLUSH_S = 11.0
IDLE_SAMPLE_S = 2.0
"""Without PostgreSQL to wait for, how long the idle system is sampled before a window."""
QUIET_CORES = 0.05
"""A system is quiet when its processes together use less than this share of one core."""

PidSource = Callable[[], list[int]]


def proc_group(pgid: Callable[[], int]) -> PidSource:
    """A role made of one process group (a Proc leader and everything it forked)."""
    return lambda: group_pids(pgid())


@dataclass
class Snapshot:
    at: float
    cpu: dict[str, dict[int, float]]
    redis: dict[str, int]
    pg: dict[str, Any] | None
    idle_cores: dict[str, float] = field(default_factory=dict)


@dataclass
class Meter:
    """Reads the cost counters of one system run; `client_roles` are the bench's own processes."""

    roles: dict[str, PidSource]
    redis_port: int
    pg: PgDatabase | None = None
    client_roles: frozenset[str] = frozenset({"client"})
    _client: redis.Redis | None = field(default=None, repr=False)

    def _redis(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis(host="127.0.0.1", port=self.redis_port, socket_timeout=10)
        return self._client

    def _commandstats(self) -> dict[str, int]:
        stats: dict[str, Any] = self._redis().info("commandstats")
        return {key.removeprefix("cmdstat_"): int(value["calls"]) for key, value in stats.items()}

    def _cpu(self) -> dict[str, dict[int, float]]:
        return {role: cpu_by_pid(source()) for role, source in self.roles.items()}

    def snapshot(self, *, with_pg: bool = True) -> Snapshot:
        return Snapshot(
            at=time.perf_counter(),
            cpu=self._cpu(),
            redis=self._commandstats(),
            pg=self.pg.stats() if self.pg is not None and with_pg else None,
        )

    async def open_window(self) -> Snapshot:
        """The snapshot a measured window starts from (after PostgreSQL's counters caught up).

        The wait before it doubles as a sample of the idle system: `idle_cores` is what each role
        burns doing nothing, which a long window (a slow mode) charges to its few units.
        """
        t0, cpu0 = time.perf_counter(), self._cpu()
        await (self.settle_pg() if self.pg is not None else asyncio.sleep(IDLE_SAMPLE_S))
        snap = self.snapshot()
        seconds = snap.at - t0
        snap.idle_cores = {
            role: round(sum(v - cpu0.get(role, {}).get(pid, v) for pid, v in pids.items()) / seconds, 3)
            for role, pids in snap.cpu.items()
        }
        return snap

    async def close_window(self, before: Snapshot, *, units: int, unit: str) -> dict[str, Any]:
        """Wait for the system to go quiet, snapshot, and return the window's cost per unit.

        CPU and Redis are read as soon as the system is quiet; PostgreSQL's counters after its flush delay.
        """
        quiet_s = await self.wait_quiet()
        after = self.snapshot(with_pg=False)
        if self.pg is not None:
            await self.settle_pg()
            after.pg = self.pg.stats()
        out = cost(before, after, units=units, unit=unit, client_roles=self.client_roles)
        out["quiet_wait_s"] = quiet_s
        return out

    def system_cpu_s(self) -> float:
        """CPU seconds used so far by every non-client role (for the quiet check)."""
        return sum(sum(pids.values()) for role, pids in self._cpu().items() if role not in self.client_roles)

    async def wait_quiet(self, *, timeout_s: float = 30.0, interval_s: float = 0.5) -> float:
        """Wait until the system's processes go quiet (trailing work such as a recorder done).

        Returns the seconds waited; gives up after `timeout_s` (a busy idle system is reported, not fatal).
        """
        started = time.perf_counter()
        last = self.system_cpu_s()
        while time.perf_counter() - started < timeout_s:
            await asyncio.sleep(interval_s)
            now = self.system_cpu_s()
            if now - last < QUIET_CORES * interval_s:
                break
            last = now
        return round(time.perf_counter() - started, 2)

    async def settle_pg(self) -> None:
        """Let idle backends publish their counters before a PostgreSQL snapshot is trusted."""
        if self.pg is not None:
            await asyncio.sleep(PG_STATS_FLUSH_S)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _per(value: float, units: int, digits: int = 3) -> float:
    return round(value / units, digits) if units else 0.0


def _cpu_delta(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds per role; a pid new in the window counts from 0 (it started inside it)."""
    out = {}
    for role, pids in after.cpu.items():
        was = before.cpu.get(role, {})
        out[role] = sum(seconds - was.get(pid, 0.0) for pid, seconds in pids.items())
    return out


def _redis_delta(before: Snapshot, after: Snapshot) -> dict[str, int]:
    calls = {cmd: n - before.redis.get(cmd, 0) for cmd, n in after.redis.items()}
    # The meter's own INFO (the one before the window; the closing one is not counted yet).
    calls["info"] = calls.get("info", 0) - 1
    return {cmd: n for cmd, n in calls.items() if n > 0}


def cost(before: Snapshot, after: Snapshot, *, units: int, unit: str, client_roles: frozenset[str]) -> dict[str, Any]:
    """The window's cost per unit (a task, a submit, an event), every role apart and summed."""
    cpu = _cpu_delta(before, after)
    system_s = sum(v for role, v in cpu.items() if role not in client_roles)
    window_s = after.at - before.at
    redis_calls = _redis_delta(before, after)
    total_calls = sum(redis_calls.values())
    top = sorted(redis_calls.items(), key=lambda kv: -kv[1])[:12]
    out: dict[str, Any] = {
        "unit": unit,
        "units": units,
        "window_s": round(window_s, 3),
        "cpu_ms_per_unit": {role: _per(v * 1000, units) for role, v in sorted(cpu.items())},
        "cpu_ms_per_unit_system": _per(system_s * 1000, units),
        "cpu_cores_busy": {role: round(v / window_s, 2) for role, v in sorted(cpu.items())} if window_s else {},
        "idle_cores_before": before.idle_cores,
        "redis_commands_per_unit": _per(total_calls, units, 2),
        "redis_commands_top_per_unit": {cmd: _per(n, units, 2) for cmd, n in top},
    }
    if before.pg is not None and after.pg is not None:
        out["pg_per_unit"] = pg_delta(before.pg, after.pg, units)
    return out


def pg_delta(before: dict[str, Any], after: dict[str, Any], units: int) -> dict[str, Any]:
    """Transactions and rows written per unit, with the per-table rows beside the totals."""
    db = {k: after["database"][k] - before["database"].get(k, 0) for k in after["database"]}
    tables = {}
    for name, counts in after["tables"].items():
        was = before["tables"].get(name, {})
        diff = {k: v - was.get(k, 0) for k, v in counts.items()}
        if any(diff.values()):
            tables[name] = {k: _per(v, units) for k, v in diff.items() if v}
    return {
        "commits": _per(db["xact_commit"], units),
        "rollbacks": _per(db["xact_rollback"], units),
        "rows_inserted": _per(db["tup_inserted"], units),
        "rows_updated": _per(db["tup_updated"], units),
        "rows_deleted": _per(db["tup_deleted"], units),
        "connections_opened": _per(db.get("sessions", 0), units),
        "tables": tables,
    }
