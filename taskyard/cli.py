"""The `taskyard` command (click): one entry point for every process, the database chores and the client.

`api` runs uvicorn in this process and `scheduler` runs scheduler/cli.py's command in it; `worker` replaces this
process with `python -m worker` (its options live once, in worker/cli.py, and the entry points never import the
worker SDK); `dev` runs the whole stack under a supervisor (`taskyard.dev`). Settings are read from the
environment once, by each command. Every error is one line on stderr: exit 2 for bad usage or settings, 1 for a
service that cannot be reached (the client commands document their own codes).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ("cli", "main")

DEFAULT_GRACEFUL_SHUTDOWN_S = 25
"""uvicorn's drain budget on SIGTERM; keep it below the pod's terminationGracePeriodSeconds (30 s)."""
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _scheduler() -> click.Command:
    from scheduler.cli import command

    return command


def _jobs() -> click.Command:
    from api.jobs.cli import command

    return command


def _chore(name: str) -> Callable[[], click.Command]:
    def load() -> click.Command:
        from taskyard.chore_commands import create_admin, create_agent, migrate

        return {"migrate": migrate, "create-admin": create_admin, "create-agent": create_agent}[name]

    return load


def _client(name: str) -> Callable[[], click.Command]:
    def load() -> click.Command:
        from taskyard.client import client_commands

        return {command.name: command for command in client_commands()}[name]

    return load


_LOADERS: dict[str, Callable[[], click.Command]] = {
    "scheduler": _scheduler,
    "jobs": _jobs,
    **{name: _chore(name) for name in ("migrate", "create-admin", "create-agent")},
    **{name: _client(name) for name in ("login", "tasks", "agents")},
}
_ORDER = (
    *("dev", "api", "scheduler", "worker", "jobs"),  # the processes
    *("migrate", "create-admin", "create-agent"),  # the database chores
    *("login", "tasks", "agents"),  # the client of a running server
)


class _Group(click.Group):
    """Imports a command's module only when that command runs (or help lists it): the server side costs a
    client command about a second of startup. Lists commands in the order the processes are described."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_ORDER)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in _LOADERS:
            self.add_command(_LOADERS[cmd_name](), cmd_name)
        return self.commands.get(cmd_name)


@click.group(
    cls=_Group,
    help="taskyard: a distributed task scheduler for LLM worker agents. `taskyard COMMAND --help` describes "
    "each command; configuration comes from the environment (docs/operations.md).",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="taskyard", prog_name="taskyard", message="%(prog)s %(version)s")
def cli() -> None:
    pass


@cli.command(
    help="Run the whole stack on one machine: API, scheduler, side jobs and a worker, supervised (a child "
    "that exits is restarted with backoff). Without DATABASE_URL/REDIS_URL: SQLite under the data folder and an "
    "embedded redis-server on a free loopback port. Prints an admin login. Ctrl-C stops everything.",
    short_help="run API, scheduler and a worker on embedded defaults (SQLite + embedded Redis)",
)
@click.option("--data-dir", default=None, help="Data folder (default: TASKYARD_DATA_DIR or ./.taskyard).")
@click.option("--host", default=None, help="API listen host (default: from HTTP_ADDR, else 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="API listen port (default: from HTTP_ADDR).")
@click.option("--workers", type=click.IntRange(min=0), default=1, show_default=True, help="Worker processes.")
@click.option("--no-scheduler", is_flag=True, help="Do not start a scheduler.")
@click.option("--redis-from-path", is_flag=True, help="Use redis-server from PATH instead of the bundled one.")
@click.pass_context
def dev(
    ctx: click.Context,
    *,
    data_dir: str | None,
    host: str | None,
    port: int | None,
    workers: int,
    no_scheduler: bool,
    redis_from_path: bool,
) -> None:
    from taskyard.dev import DevOptions, run_dev
    from taskyard.migrate import async_database_url
    from taskyard.startup import ready_settings

    # What the supervisor will hand its children, checked before it starts anything: a placeholder Redis URL
    # when it is to start its own (never contacted here), its data folder and listen address.
    environ = dict(os.environ)
    environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    if data_dir:
        environ["TASKYARD_DATA_DIR"] = data_dir
    if host or port is not None:
        environ.pop("HTTP_ADDR", None)
    ready_settings(
        ctx, redis="REDIS_URL" in os.environ, database=True, database_url=async_database_url, environ=environ
    )
    options = DevOptions(
        data_dir=data_dir,
        host=host,
        port=port,
        workers=workers,
        scheduler=not no_scheduler,
        redis_from_path=redis_from_path,
    )
    ctx.exit(run_dev(options, os.environ))


@cli.command(
    help="Serve REST and /ws as one API replica (uvicorn), or as several processes sharing the port "
    "(--processes). Settings come from the environment (docs/operations.md); the database and Redis are checked "
    "before it starts listening.",
    short_help="run the API (uvicorn)",
)
@click.option("--host", default=None, help="Listen host (default: from HTTP_ADDR).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Listen port (default: from HTTP_ADDR).")
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=None,
    help="API processes sharing the port (default: TASKYARD_API_PROCESSES, 1); above 1 needs PostgreSQL.",
)
@click.option(
    "--timeout-graceful-shutdown",
    type=click.IntRange(min=0),
    default=DEFAULT_GRACEFUL_SHUTDOWN_S,
    show_default=True,
    help="Seconds to drain connections on SIGTERM.",
)
# Kept so old command lines still start; the setting TASKYARD_API_TRUSTED_PROXIES decides.
@click.option("--proxy-headers", is_flag=True, hidden=True)
@click.option("--forwarded-allow-ips", default=None, hidden=True)
@click.pass_context
def api(
    ctx: click.Context,
    *,
    host: str | None,
    port: int | None,
    processes: int | None,
    timeout_graceful_shutdown: int,
    proxy_headers: bool,
    forwarded_allow_ips: str | None,
) -> None:
    from api.http.logs import configure_logging
    from taskyard.api_process import run
    from taskyard.startup import ready_settings

    environ = dict(os.environ)
    if processes is not None:
        # The spawned processes read their settings from the environment: the option goes there too.
        os.environ["TASKYARD_API_PROCESSES"] = environ["TASKYARD_API_PROCESSES"] = str(processes)
    settings = ready_settings(ctx, redis=True, database=True, environ=environ)
    # The entry point owns logging (the app never configures it); uvicorn logs through our root handler.
    configure_logging(settings.log_level)
    if proxy_headers or forwarded_allow_ips is not None:
        logging.getLogger(__name__).warning(
            "--proxy-headers/--forwarded-allow-ips are ignored; set TASKYARD_API_TRUSTED_PROXIES instead"
        )
    run(
        settings,
        host=host or settings.http.host,
        port=port if port is not None else settings.http.port,
        graceful_shutdown_s=timeout_graceful_shutdown,
        processes=settings.http.processes,
    )


@click.command(
    "worker",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
    help="Run one worker (one agent connection). Replaces this process with `python -m worker ARGS`; every "
    "option after `taskyard worker` is the worker's own (`taskyard worker --help` lists them).",
    short_help="run one worker (one agent connection)",
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def worker(args: tuple[str, ...]) -> None:
    # The worker is a standalone SDK the entry points never import (import contracts): hand the process over,
    # so its signals reach it directly and its options are parsed by its own command only.
    sys.stdout.flush()
    sys.stderr.flush()
    os.environ["TASKYARD_PROG"] = "taskyard worker"  # so its --help and errors name the command used
    os.execv(sys.executable, [sys.executable, "-m", "worker", *args])  # noqa: S606 - fixed interpreter, argv list


cli.add_command(worker)


def _usage_line(exc: click.UsageError) -> str:
    """argparse's habit, kept for scripts and docs: `<command path>: error: <what> (see --help)`."""
    where = exc.ctx.command_path if exc.ctx is not None else "taskyard"
    message = exc.format_message()
    if isinstance(exc, click.BadParameter) and not isinstance(exc, click.MissingParameter) and exc.param:
        name = exc.param_hint if isinstance(exc.param_hint, str) else "/".join(exc.param.opts)
        message = f"argument {name}: {exc.message}"
    return f"{where}: error: {message.rstrip('.')} (see --help)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run `taskyard` and return its exit code (`python -m taskyard` and the console script)."""
    try:
        result = cli.main(
            args=list(sys.argv[1:] if argv is None else argv), prog_name="taskyard", standalone_mode=False
        )
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message(), err=True)
        return EXIT_USAGE
    except click.UsageError as exc:
        click.echo(_usage_line(exc), err=True)
        return EXIT_USAGE
    except click.ClickException as exc:
        click.echo(f"taskyard: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except click.Abort:
        return EXIT_INTERRUPTED
    return result if isinstance(result, int) else 0
