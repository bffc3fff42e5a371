"""`python -m taskyard` is the `taskyard` command (useful where the console script is not on PATH)."""

from __future__ import annotations

from taskyard.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
