"""Concurrent single submits: `--clients` clients (spread over `--client-procs` processes), each one
submit at a time; submits/s, answer time, then every task drained."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.modes import ALL_SYSTEMS, Metric, Mode
from bench.modes.single_submits import run_single_submits

if TYPE_CHECKING:
    from pathlib import Path

    from bench.modes import RunContext


async def run(ctx: RunContext, system: str, log_dir: Path) -> dict[str, Any]:
    a = ctx.args
    return await run_single_submits(
        ctx, system, log_dir, n=a.concurrent_submits, clients=a.clients, procs=a.client_procs
    )


MODE = Mode(
    name="submit_concurrent",
    title="concurrent single submits",
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
    note="client CPU is the bench's own (cost line `client`; the submitters alone: `submitter CPU`); check it "
    "stays below a core per process",
)
