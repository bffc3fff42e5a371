"""Paths shared by the driver and the peers' scripts. Standard library only."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
