"""`taskyard jobs` / `python -m api.jobs`: one click command for the side-jobs process, options defined once.

Exit codes: 0 after a clean stop (or a finished `--burst`), 1 when Redis or the database cannot be reached,
2 for bad settings. Those errors are one line on stderr.
"""

from __future__ import annotations

import asyncio
import logging
import os

import click

from api.preflight import PreflightError, check_services, exit_code
from api.settings import SettingsError, load_settings

__all__ = ("command", "main")


@click.command(
    "jobs",
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Run the side-job process: one rq worker on the side-job queue and rq's cron scheduler for the "
    "periodic jobs (retention purges, schedules, webhooks). Needs REDIS_URL and DATABASE_URL "
    "like the API. Exit codes: 0 stopped, 1 Redis or the database unreachable, 2 bad settings.",
    short_help="run the side-job process (rq worker + rq cron)",
)
@click.option("--burst", is_flag=True, help="Run the queued jobs, then exit.")
@click.option("--no-cron", is_flag=True, help="Do not enqueue the periodic jobs from this process.")
@click.pass_context
def command(ctx: click.Context, burst: bool, no_cron: bool) -> None:
    try:
        settings = load_settings(os.environ)
        asyncio.run(check_services(settings))
    except (SettingsError, PreflightError) as exc:
        click.echo(f"{ctx.command_path}: {exc}", err=True)
        ctx.exit(exit_code(exc))
    from api.jobs.process import run_jobs  # rq and the job modules load only when the process really starts

    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    ctx.exit(run_jobs(settings, burst=burst, cron=not no_cron))


def main() -> None:
    """`python -m api.jobs` (what `taskyard dev` starts)."""
    command.main(prog_name="python -m api.jobs")
