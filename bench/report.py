"""The bench's answer: per mode, a table of every system's figures, taskyard's ratios to the peers, the
cost per unit of each process role, and the whole as JSON.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from bench.modes import TASKYARD, Metric, Mode, lookup

if TYPE_CHECKING:
    from pathlib import Path

COL = 13


def median_result(runs: list[dict[str, Any]], metric: Metric) -> dict[str, Any]:
    """The median run by `metric` (failed runs only when every run failed), every run's value beside it."""
    good = [r for r in runs if "error" not in r and lookup(r, metric.path) is not None]
    if not good:
        return runs[-1]
    ordered = sorted(good, key=lambda r: lookup(r, metric.path) or 0.0)
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    if len(runs) > 1:
        chosen["runs_" + metric.path[-1]] = [lookup(r, metric.path) for r in runs]
        chosen["failed_runs"] = len(runs) - len(good)
    return chosen


def ratios(mode: Mode, results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per metric: taskyard / best peer (and / each peer). Higher-is-better metrics: > 1 is taskyard ahead;
    lower-is-better ones (latencies, costs): < 1 is taskyard ahead."""
    ours = results.get(TASKYARD)
    peers = {n: r for n, r in results.items() if n != TASKYARD}
    out: dict[str, dict[str, Any]] = {}
    if ours is None or not peers:
        return out
    for metric in mode.metrics:
        if not metric.has_ratio:
            continue
        mine = lookup(ours, metric.path)
        theirs = {n: v for n, r in peers.items() if (v := lookup(r, metric.path)) is not None}
        if mine is None or not theirs:
            continue
        best = (max if metric.higher_is_better else min)(theirs, key=lambda n: theirs[n])
        out[metric.label] = {
            "best_peer": best,
            "ratio_to_best": round(mine / theirs[best], 3) if theirs[best] else None,
            "vs": {n: round(mine / v, 3) if v else None for n, v in theirs.items()},
        }
    return out


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


def _row(label: str, cells: list[str], width: int) -> str:
    return label.ljust(width) + "".join(c.rjust(COL) for c in cells)


def mode_table(mode: Mode, results: dict[str, dict[str, Any]]) -> str:
    names = list(results)
    width = max([len(m.label) for m in mode.metrics] + [24]) + 2
    lines = [f"== {mode.name}: {mode.title}", _row("", names, width)]
    for metric in mode.metrics:
        lines.append(_row(metric.label, [_cell(lookup(results[n], metric.path)) for n in names], width))
    rat = ratios(mode, results)
    if rat:
        lines.append("taskyard / best peer (higher-better rows: >1 ahead; the others: <1 ahead)")
        for label, r in rat.items():
            best = f"{r['ratio_to_best']:.2f}x vs {r['best_peer']}" if r["ratio_to_best"] is not None else "-"
            lines.append("  " + label.ljust(width - 2) + best)
    lines += cost_lines(results)
    if mode.note:
        lines.append(f"({mode.note})")
    for name, result in results.items():
        if "error" in result:
            lines.append(f"FAILED {name}: {result['error']}")
    return "\n".join(lines)


def cost_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    """CPU ms per unit of each role, Redis commands and PostgreSQL work per unit, one line per system."""
    lines = []
    for name, result in results.items():
        cost = result.get("cost")
        if not isinstance(cost, dict):
            continue
        roles = ", ".join(f"{role} {ms:.3f}" for role, ms in cost["cpu_ms_per_unit"].items())
        line = (
            f"  {name} cost per {cost['unit']}: CPU {cost['cpu_ms_per_unit_system']:.3f} ms system ({roles}); "
            f"Redis {cost['redis_commands_per_unit']:.1f} cmds"
        )
        pg = cost.get("pg_per_unit")
        if pg:
            line += (
                f"; SQL {pg['commits']:.2f} commits, {pg['rollbacks']:.2f} rollbacks, "
                f"{pg['rows_inserted']:.2f} rows inserted, {pg['rows_updated']:.2f} updated"
            )
        lines.append(line)
    return lines


def summary(modes: list[Mode], mode_results: dict[str, Any]) -> str:
    """One line per mode: taskyard's headline figures and, where peers ran, its ratio to the best one."""
    lines = ["== summary (taskyard; ratio to the best peer where one ran)"]
    for mode in modes:
        entry = mode_results.get(mode.name)
        if entry is None:
            continue
        ours = entry["results"].get(TASKYARD, {})
        if "error" in ours:
            lines.append(f"  {mode.name}: FAILED")
            continue
        cells = []
        for metric in mode.metrics[:3]:
            value = lookup(ours, metric.path)
            ratio = entry["ratios"].get(metric.label, {}).get("ratio_to_best")
            cells.append(f"{metric.label} {_cell(value)}" + (f" ({ratio:.2f}x)" if ratio is not None else ""))
        lines.append(f"  {mode.name}: " + "; ".join(cells))
    return "\n".join(lines)


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
