"""The child side of the bench's client processes: one JSON object per stdout line, commands on stdin.

Standard library only (also imported inside the peers' venv). The driver (`bench.children`) starts a
client, waits for its `ready` message, takes the cost snapshot, then writes `go`; the client answers
with its `result`, then waits for `stop` (so its processes are still there for the closing snapshot).
"""

from __future__ import annotations

import json
import sys
from typing import Any


def emit(message: dict[str, Any]) -> None:
    """One line of JSON on stdout (logs go to stderr)."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def wait_command(expected: str) -> None:
    """Block until the driver writes `expected` (EOF counts as the driver being gone: exit)."""
    while True:
        line = sys.stdin.readline()
        if not line:
            raise SystemExit(3)
        if line.strip() == expected:
            return
