"""`python -m api.jobs [--burst] [--no-cron]`: the side-jobs process, the same click command as `taskyard jobs`."""

from __future__ import annotations

from api.jobs.cli import main

main()
