"""Latency and throughput summaries. Standard library only (also imported inside the peers' venv)."""

from __future__ import annotations

import math
from typing import Any


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize_ms(samples_s: list[float]) -> dict[str, Any]:
    """Summarize durations given in seconds as milliseconds: n, p50, p90, p99, mean, min, max."""
    values = sorted(s * 1000.0 for s in samples_s)
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 3),
        "p90": round(percentile(values, 90), 3),
        "p99": round(percentile(values, 99), 3),
        "mean": round(sum(values) / len(values), 3),
        "min": round(values[0], 3),
        "max": round(values[-1], 3),
    }


def throughput(n: int, seconds: float) -> dict[str, Any]:
    """Tasks per second for `n` tasks finished in `seconds`."""
    return {"n": n, "seconds": round(seconds, 3), "tasks_per_s": round(n / seconds, 1) if seconds > 0 else None}


def latency_fields(e2e: list[float], dispatch: list[float], submit_to_receive: list[float]) -> dict[str, Any]:
    """The result fields of a sequential run, every system alike (samples in seconds).

    A dispatch sample below zero means the worker had the task before the submit call returned to the
    client; it counts as 0 and the count is reported as `received_before_answer`.
    """
    return {
        "latency_e2e_ms": summarize_ms(e2e),
        "latency_dispatch_ms": {
            **summarize_ms([max(0.0, s) for s in dispatch]),
            "received_before_answer": sum(1 for s in dispatch if s < 0),
        },
        "latency_submit_to_receive_ms": summarize_ms(submit_to_receive),
    }
