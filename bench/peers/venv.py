"""The peers' own virtualenv, `bench/.venv-peers`, created on first use (their pins may clash with ours)."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

from bench.peers.common import REPO_ROOT

if TYPE_CHECKING:
    from pathlib import Path

VENV_DIR = REPO_ROOT / "bench" / ".venv-peers"
# Ranges, not exact pins: the bench measures what their users install today, within a major line
# whose APIs the run scripts were written against. The versions used are recorded in each result.
REQUIREMENTS = (
    "dramatiq[redis]>=2.2,<3",
    "taskiq>=0.13,<0.14",
    "taskiq-redis>=1.2,<2",
    "celery[redis]>=5.5,<6",
    "rq>=2.12,<3",
)
_STAMP = VENV_DIR / ".bench-requirements"


def peers_python(*, log: Path) -> Path:
    """The peers' venv interpreter, creating the venv or reinstalling when the requirements changed."""
    python = VENV_DIR / "bin" / "python"
    wanted = "\n".join(REQUIREMENTS)
    if python.exists() and _STAMP.exists() and _STAMP.read_text() == wanted:
        return python
    print(f"creating the peers' virtualenv in {VENV_DIR} (first run; pip install from PyPI) ...", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV_DIR)], check=True, stdout=out, stderr=out)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True, stdout=out, stderr=out
        )
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *REQUIREMENTS], check=True, stdout=out, stderr=out, timeout=900
        )
    _STAMP.write_text(wanted)
    return python
