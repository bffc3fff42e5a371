"""Run one peer's script in the peers' venv and read its one-line JSON answer."""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING, Any

from bench.peers.common import REPO_ROOT

if TYPE_CHECKING:
    from pathlib import Path

PEERS = {"dramatiq": "bench.peers.dramatiq_run", "taskiq": "bench.peers.taskiq_run"}


def run_peer(
    name: str,
    *,
    python: Path,
    redis_url: str,
    n: int,
    seq: int,
    batch: int,
    log_dir: Path,
    timeout_s: float,
    repeat: int = 1,
) -> dict[str, Any]:
    """The peer's result dict, or `{"name", "error"}` when it failed (the run goes on with the others)."""
    argv = [
        str(python),
        "-m",
        PEERS[name],
        "--redis-url",
        redis_url,
        "--n",
        str(n),
        "--seq",
        str(seq),
        "--batch",
        str(batch),
        "--log-dir",
        str(log_dir),
        "--timeout-s",
        str(timeout_s),
        "--repeat",
        str(repeat),
    ]
    log_path = log_dir / f"{name}-client.log"
    try:
        with log_path.open("ab") as stderr:
            done = subprocess.run(
                argv,
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                stderr=stderr,
                timeout=timeout_s * (2 + repeat) + 120,
                check=False,
            )
    except subprocess.TimeoutExpired:
        return {"name": name, "error": f"timed out; see {log_path}"}
    lines = [line for line in done.stdout.decode(errors="replace").splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        return {"name": name, "error": f"exit {done.returncode}; {log_path}:\n{tail}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result
