"""SQL statements per task on each path, counted on the wire by a proxy in front of PostgreSQL
(`bench.pgproxy`; pg_stat_statements is not available): single submits, batch submits, then running
every submitted task to done. taskyard only. The proxy costs time, so this mode reports counts, not speed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.modes import TASKYARD, Metric, Mode
from bench.pgproxy import CountingProxy
from bench.ty.pgview import DoneCounter
from bench.ty.system import describe, start_workers, taskyard_system

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from bench.modes import RunContext
    from bench.ty.system import TySystem

TOP = 15


def per_unit(counts: Counter[str], units: int) -> dict[str, Any]:
    total = sum(counts.values())
    return {
        "units": units,
        "statements": round(total / units, 2),
        "transactions": round(counts["BEGIN"] / units, 2),
        "commits": round(counts["COMMIT"] / units, 2),
        "rollbacks": round(counts["ROLLBACK"] / units, 2),
        "by_kind": {kind: round(n / units, 3) for kind, n in counts.most_common(TOP)},
    }


async def _phase(
    ty: TySystem, proxy: CountingProxy, units: int, action: Callable[[], Awaitable[Any]]
) -> dict[str, Any]:
    """The statements `action` and the trailing work it causes (until the system is quiet) cost per unit."""
    before = proxy.snapshot()
    await action()
    await ty.meter.wait_quiet()
    return per_unit(proxy.snapshot() - before, units)


async def run(ctx: RunContext, system: str, log_dir: Path) -> dict[str, Any]:
    a = ctx.args
    proxy = await CountingProxy().start()
    try:
        async with taskyard_system(ctx, log_dir, workers=0, concurrency=0, pg_port=proxy.port) as ty:
            agents = [
                await ty.rest.create_agent(f"bench-worker-{i}", concurrency=a.concurrency, capabilities=[])
                for i in range(a.workers)
            ]
            await ty.rest.submit_one()  # the first request warms the API's pool and caches
            await ty.meter.wait_quiet()

            async def singles() -> None:
                for _ in range(a.sql_n):
                    await ty.rest.submit_one()

            async def batch() -> None:
                for offset in range(0, a.sql_n, a.batch):
                    await ty.rest.submit_batch(min(a.batch, a.sql_n - offset))

            async def run_all() -> None:
                await start_workers(ty, a.workers, a.concurrency, agents)
                async with DoneCounter(ty.db) as done:
                    await done.wait_for(2 * a.sql_n + 1, timeout_s=a.timeout_s)

            result = {
                "single_submit": await _phase(ty, proxy, a.sql_n, singles),
                "batch_submit": await _phase(ty, proxy, a.sql_n, batch),
                "run_to_done": await _phase(ty, proxy, 2 * a.sql_n + 1, run_all),
                "note": "statements executed by taskyard's processes on the wire (BEGIN/COMMIT included); "
                "submits run with no worker online, so their phases hold only the submit path and its recording",
                "setup": f"{a.sql_n} single POST /api/tasks, then {a.sql_n} in batches of {a.batch}, then "
                f"{a.workers} workers run all of them",
            }
            return describe(result, ty)
    finally:
        await proxy.stop()


MODE = Mode(
    name="sql",
    title="SQL statements per task, counted on the wire",
    systems=(TASKYARD,),
    metrics=(
        Metric("single POST: statements", ("single_submit", "statements")),
        Metric("single POST: transactions", ("single_submit", "transactions")),
        Metric("single POST: rollbacks", ("single_submit", "rollbacks")),
        Metric("batch: statements/task", ("batch_submit", "statements")),
        Metric("run to done: statements/task", ("run_to_done", "statements")),
        Metric("run to done: transactions/task", ("run_to_done", "transactions")),
    ),
    run=run,
    note="taskyard only; statement kinds per unit in the JSON (`by_kind`)",
)
