"""What a bench mode is: a named workload run on each system it applies to, with the metrics to compare.

One module per mode (`bench/modes/<name>.py`) exposes `MODE`; `bench/__main__.py` keeps the registry.
A mode's `run(ctx, system)` starts that system from nothing (its own redis-server, and for taskyard
its own database), measures, stops everything, and returns a JSON-able dict; raising means FAILED.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable
    from pathlib import Path

TASKYARD = "taskyard"
PEERS = ("dramatiq", "taskiq", "celery", "rq")
ALL_SYSTEMS = (TASKYARD, *PEERS)


@dataclass(frozen=True)
class Metric:
    """One comparable number: where it sits in a result, and which direction is better."""

    label: str
    path: tuple[str, ...]
    higher_is_better: bool = False
    has_ratio: bool = True
    """False for figures whose quotient means nothing (a slope around 0, a count that may be 0)."""


@dataclass
class RunContext:
    """What every mode run gets: the parsed arguments and where logs go."""

    args: argparse.Namespace
    log_dir: Path
    peers_python: dict[str, Path] = field(default_factory=dict)
    """Interpreter of each peer's venv (filled before the peers run)."""

    def sub_log_dir(self, mode: str, system: str, attempt: int) -> Path:
        path = self.log_dir / f"{mode}-{system}-{attempt}"
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass(frozen=True)
class Mode:
    """A workload; `metrics[0]` picks the median run when `--repeat` is above 1."""

    name: str
    title: str
    systems: tuple[str, ...]
    metrics: tuple[Metric, ...]
    run: Callable[[RunContext, str, Path], Awaitable[dict[str, Any]]]
    note: str = ""
    """Printed under the mode's table (what it measures, what does not apply)."""


def lookup(result: dict[str, Any], path: tuple[str, ...]) -> float | None:
    """The number at `path` in a result, or None (missing, failed run, not a number)."""
    value: Any = result
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
