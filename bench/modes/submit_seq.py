"""Sequential single submits: one client, one submit at a time (answer time, submits/s), then drained."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.modes import ALL_SYSTEMS, Metric, Mode
from bench.modes.single_submits import run_single_submits

if TYPE_CHECKING:
    from pathlib import Path

    from bench.modes import RunContext


async def run(ctx: RunContext, system: str, log_dir: Path) -> dict[str, Any]:
    return await run_single_submits(ctx, system, log_dir, n=ctx.args.seq_submits, clients=1, procs=1)


MODE = Mode(
    name="submit_seq",
    title="sequential single submits (one client, one submit at a time)",
    systems=ALL_SYSTEMS,
    metrics=(
        Metric("submits/s", ("submits_per_s",), higher_is_better=True),
        Metric("answer p50 ms", ("answer_ms", "p50")),
        Metric("answer p99 ms", ("answer_ms", "p99")),
        Metric("CPU ms/task (system)", ("cost", "cpu_ms_per_unit_system")),
        Metric("Redis cmds/task", ("cost", "redis_commands_per_unit")),
        Metric("submitter CPU ms/submit", ("client", "cpu_ms_per_submit"), has_ratio=False),
    ),
    run=run,
    note="taskyard: POST /api/tasks answered after the row is committed; peers: their enqueue call returned",
)
