"""`python -m api.jobs [--burst] [--no-cron]`: the side-jobs process (the same as `taskyard jobs`)."""

from __future__ import annotations

import sys

from api.jobs.process import main

sys.exit(main(sys.argv[1:]))
