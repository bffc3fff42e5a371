"""Raw client samples -> the figures every system is compared on (the same code for taskyard and peers).

Times are perf_counter seconds (CLOCK_MONOTONIC: one clock for every process on the machine).
"""

from __future__ import annotations

import math
from typing import Any

from bench.stats import summarize_ms, throughput

LATE_S = 0.005
"""An open-loop submit that starts later than this after its schedule counts as late (the client lagged)."""


def merge_submits(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Several client processes' `submits` answers as one."""
    return {
        "started": min(p["started"] for p in parts),
        "submitted": max(p["submitted"] for p in parts),
        "drained": max(p.get("drained", p["submitted"]) for p in parts),
        "answers": [a for p in parts for a in p["answers"]],
    }


def submit_figures(raw: dict[str, Any]) -> dict[str, Any]:
    """Submits/s over the submitting window, answer time p50/p99, and how long the work took to drain."""
    answers = raw["answers"]
    window = raw["submitted"] - raw["started"]
    return {
        "submits": len(answers),
        "submit_seconds": round(window, 3),
        "submits_per_s": round(len(answers) / window, 1) if window > 0 else None,
        "answer_ms": summarize_ms([b - a for a, b in answers]),
        "drained_seconds": round(raw["drained"] - raw["started"], 3),
    }


def batch_figures(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        **throughput(raw["n"], raw["finished"] - raw["started"]),
        "submit_seconds": round(raw["submitted"] - raw["started"], 3),
    }


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 with fewer than two points)."""
    if len(points) < 2:
        return 0.0
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def backlog_series(samples: list[list[float | None]], started: float, seconds: int) -> list[int]:
    """Tasks due by their schedule but without a result yet, at the end of each second (a submit the
    client could not make on time is backlog too: the system was not taking work at the offered rate)."""
    answered = sorted(s[0] for s in samples if s[0] is not None)
    finished = sorted(s[3] for s in samples if s[3] is not None)
    series, ia, ifin = [], 0, 0
    for k in range(1, seconds + 1):
        t = started + k
        while ia < len(answered) and answered[ia] <= t:
            ia += 1
        while ifin < len(finished) and finished[ifin] <= t:
            ifin += 1
        series.append(ia - ifin)
    return series


def open_loop_figures(samples: list[list[float | None]], *, rate: float, duration_s: float) -> dict[str, Any]:
    """submit -> result latency, how far the client fell behind its schedule, and the backlog's trend.

    A sample is [scheduled, called, answered, result]. `scheduled_to_result_ms` counts from the time a
    submit was due (it does not hide the waiting of submits the system held back); `submit_to_result_ms`
    from the call. The backlog grows when its least-squares slope over the second half of the
    submitting window is above 1% of the rate.
    """
    started = min((s[0] for s in samples if s[0] is not None), default=0.0)
    done = [s for s in samples if s[3] is not None and s[1] is not None]
    lags = [s[1] - s[0] for s in samples if s[1] is not None and s[0] is not None]
    series = backlog_series(samples, started, math.ceil(duration_s))
    half = [(float(k), float(v)) for k, v in enumerate(series) if k >= len(series) // 2]
    slope = _slope(half)
    return {
        "rate_per_s": rate,
        "duration_s": duration_s,
        "submitted": len(samples),
        "finished": len(done),
        "unfinished": len(samples) - len(done),
        "scheduled_to_result_ms": summarize_ms([s[3] - s[0] for s in done]),  # type: ignore[operator]
        "submit_to_result_ms": summarize_ms([s[3] - s[1] for s in done]),  # type: ignore[operator]
        "answer_ms": summarize_ms([s[2] - s[1] for s in samples if s[2] is not None and s[1] is not None]),
        "late_submits": sum(1 for lag in lags if lag > LATE_S),
        "max_schedule_lag_ms": round(max(lags, default=0.0) * 1000, 1),
        "backlog_per_s": series,
        "backlog_slope_per_s": round(slope, 2),
        "backlog_grows": slope > 0.01 * rate,
    }
