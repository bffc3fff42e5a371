"""`python -m scheduler`: the same click command as `taskyard scheduler` (scheduler/cli.py)."""

from __future__ import annotations

from scheduler.cli import main

if __name__ == "__main__":
    main()
