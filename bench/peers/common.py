"""What every peer run script shares: its arguments and its JSON answer. Standard library only."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class PeerArgs:
    redis_url: str
    n: int
    seq: int
    batch: int
    warmup: int
    log_dir: Path
    timeout_s: float
    repeat: int


def parse_args(argv: list[str] | None = None) -> PeerArgs:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--n", type=int, required=True, help="tasks in the throughput run")
    parser.add_argument("--seq", type=int, required=True, help="tasks in the sequential latency run")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--log-dir", type=Path, required=True)
    parser.add_argument("--timeout-s", type=float, default=300.0, help="bound on each phase")
    parser.add_argument("--repeat", type=int, default=1, help="throughput runs (the median is reported)")
    ns = parser.parse_args(argv)
    return PeerArgs(ns.redis_url, ns.n, ns.seq, ns.batch, ns.warmup, ns.log_dir, ns.timeout_s, max(1, ns.repeat))


def versions(*dists: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for dist in dists:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "missing"
    return found


def emit(result: dict[str, Any]) -> None:
    """The one line of JSON the driver reads from stdout (logs go to stderr / log files)."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
