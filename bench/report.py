"""The bench's answer: a table of every system's numbers, taskyard's as ratios to each peer, and JSON."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

# (label, path into a system's result, higher is better)
METRICS: tuple[tuple[str, tuple[str, str], bool], ...] = (
    ("throughput tasks/s", ("throughput", "tasks_per_s"), True),
    ("submit->result p50 ms", ("latency_e2e_ms", "p50"), False),
    ("submit->result p99 ms", ("latency_e2e_ms", "p99"), False),
    ("dispatch p50 ms", ("latency_dispatch_ms", "p50"), False),
    ("dispatch p99 ms", ("latency_dispatch_ms", "p99"), False),
    ("submit->agent p50 ms", ("latency_submit_to_receive_ms", "p50"), False),
    ("submit->agent p99 ms", ("latency_submit_to_receive_ms", "p99"), False),
)
OURS = "taskyard"


def metric(result: dict[str, Any], path: tuple[str, str]) -> float | None:
    value = result.get(path[0], {}).get(path[1]) if "error" not in result else None
    return float(value) if isinstance(value, int | float) else None


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """taskyard / peer for every metric: above 1 is better for throughput, below 1 for latencies."""
    ours = results.get(OURS)
    out: dict[str, dict[str, float | None]] = {}
    if ours is None:
        return out
    for name, theirs in results.items():
        if name == OURS:
            continue
        row: dict[str, float | None] = {}
        for label, path, _ in METRICS:
            a, b = metric(ours, path), metric(theirs, path)
            row[label] = round(a / b, 3) if a is not None and b else None
        out[name] = row
    return out


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def table(results: dict[str, dict[str, Any]]) -> str:
    names = list(results)
    width = max(len(label) for label, _, _ in METRICS) + 2
    lines = ["".ljust(width) + "".join(n.rjust(14) for n in names)]
    for label, path, _ in METRICS:
        lines.append(label.ljust(width) + "".join(_cell(metric(results[n], path)).rjust(14) for n in names))
    rat = ratios(results)
    if rat:
        lines += ["", f"{OURS} as a ratio of each peer (throughput: >1 is better; latency: <1 is better)"]
        lines.append("".ljust(width) + "".join(f"vs {n}".rjust(14) for n in rat))
        for label, _, _ in METRICS:
            lines.append(
                label.ljust(width)
                + "".join(("-" if rat[n][label] is None else f"{rat[n][label]:.2f}x").rjust(14) for n in rat)
            )
    ours = results.get(OURS, {})
    for title, stages in (
        ("throughput run", ours.get("throughput", {}).get("stages")),
        ("idle sequential (probe agent) run", ours.get("dispatch_stages")),
    ):
        if stages:
            lines += ["", f"{OURS} {title}, time per stage from the recorded status events (p50 / p99 ms):"]
            for key, value in stages.items():
                if isinstance(value, dict) and value.get("n"):
                    lines.append(f"  {key.removesuffix('_ms'):<20} {_cell(value['p50']):>10} / {_cell(value['p99'])}")
    errors = [f"{n}: {r['error']}" for n, r in results.items() if "error" in r]
    if errors:
        lines += ["", "FAILED:", *errors]
    return "\n".join(lines)


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
