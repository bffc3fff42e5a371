"""The `taskyard` command: one entry point for every process and the few admin chores.

`api` runs uvicorn in this process; `scheduler` and `worker` replace this process with
`python -m scheduler` / `python -m worker` (so `api` never imports `worker`); `dev` runs the whole
stack under a supervisor (`taskyard.dev`). Settings are read from the environment once, here.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from api.settings import ApiSettings

__all__ = ("build_parser", "main")

DEFAULT_GRACEFUL_SHUTDOWN_S = 25
"""uvicorn's drain budget on SIGTERM; keep it below the pod's terminationGracePeriodSeconds (30 s)."""


# ---------------------------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------------------------


def _load_settings(environ: Mapping[str, str] | None = None) -> ApiSettings:
    from api.settings import load_settings

    return load_settings(os.environ if environ is None else environ)  # SettingsError: one line, in main()


def _cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.http.logs import configure_logging
    from protocol.limits import MAX_AGENT_FRAME_BYTES

    settings = _load_settings()
    # The entry point owns logging (the app never configures it); uvicorn logs through our root handler.
    configure_logging(settings.log_level)
    if args.proxy_headers or args.forwarded_allow_ips is not None:
        logging.getLogger(__name__).warning(
            "--proxy-headers/--forwarded-allow-ips are ignored; set TASKYARD_API_TRUSTED_PROXIES instead"
        )
    host = args.host or settings.http.host
    port = args.port if args.port is not None else settings.http.port
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        # uvicorn's default is 16 MiB; the largest legal frame is an agent's 1 MiB (RELIABILITY.md §2.4).
        ws_max_size=MAX_AGENT_FRAME_BYTES,
        # Frames are small JSON: compression costs more CPU than it saves (a measured ~3 % of the API).
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=args.timeout_graceful_shutdown,
        # X-Forwarded-For is resolved by the app, from TASKYARD_API_TRUSTED_PROXIES only.
        proxy_headers=False,
        log_config=None,
        log_level=settings.log_level.lower(),
        # The app logs one line per request itself (with the request id, without query strings).
        access_log=False,
        server_header=False,
    )
    return 0


def _exec_module(module: str, args: Sequence[str]) -> int:
    """Replace this process with `python -m <module> <args>` (signals then reach it directly)."""
    argv = [sys.executable, "-m", module, *[a for a in args if a != "--"]]
    sys.stdout.flush()
    sys.stderr.flush()
    os.environ["TASKYARD_PROG"] = f"taskyard {module}"  # so its --help and errors name the command used
    os.execv(sys.executable, argv)  # noqa: S606 - fixed interpreter, arguments passed through as a list
    return 0  # pragma: no cover - execv does not return


def _cmd_scheduler(args: argparse.Namespace) -> int:
    return _exec_module("scheduler", args.args)


def _cmd_worker(args: argparse.Namespace) -> int:
    return _exec_module("worker", args.args)


def _cmd_migrate(args: argparse.Namespace) -> int:
    from taskyard.migrate import current_revision, downgrade, upgrade

    url = _load_settings().database.url.reveal()
    if args.action == "upgrade":
        upgrade(url, args.revision or "head")
    elif args.action == "downgrade":
        if not args.revision:
            raise SystemExit("migrate downgrade: --revision is required (a revision id, -1, or base)")
        downgrade(url, args.revision)
    print(f"database at revision: {current_revision(url) or '(empty)'}")
    return 0


def _read_password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if args.password is not None:
        return str(args.password)
    if sys.stdin.isatty():
        return getpass.getpass("password for the admin: ")
    return None


def _cmd_create_admin(args: argparse.Namespace) -> int:
    from taskyard.migrate import upgrade

    settings = _load_settings()
    upgrade(settings.database.url.reveal(), "head")
    password = _read_password(args)
    if password is not None and len(password) < 8:
        raise SystemExit("create-admin: the password must be at least 8 characters")
    from taskyard.chores import ensure_admin

    user_id, outcome = asyncio.run(ensure_admin(settings, email=args.email, password=password, name=args.name))
    print(f"admin {args.email.strip().lower()} {outcome} (id {user_id})")
    return 0


def _cmd_create_agent(args: argparse.Namespace) -> int:
    from taskyard.chores import create_agent
    from taskyard.migrate import upgrade

    settings = _load_settings()
    upgrade(settings.database.url.reveal(), "head")
    agent_id, token = asyncio.run(
        create_agent(
            settings,
            name=args.name,
            owner_email=args.owner_email,
            capabilities=args.capability or [],
            concurrency=args.concurrency,
            is_public=args.public,
            agent_type=args.type,
            trusted=args.trusted,
        )
    )
    print(f"agent id:    {agent_id}")
    print(f"agent token: {token}")
    print("The token is shown once; store it now (TASKYARD_WORKER_AGENT_ID / TASKYARD_WORKER_AGENT_TOKEN).")
    return 0


def _cmd_jobs(args: argparse.Namespace) -> int:
    from api.jobs.process import run_jobs

    settings = _load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return run_jobs(settings, burst=args.burst, cron=not args.no_cron)


def _cmd_dev(args: argparse.Namespace) -> int:
    from taskyard.dev import DevOptions, run_dev

    return run_dev(
        DevOptions(
            data_dir=args.data_dir,
            host=args.host,
            port=args.port,
            workers=args.workers,
            scheduler=not args.no_scheduler,
            redis_from_path=args.redis_from_path,
        ),
        os.environ,
    )


# ---------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------


def _add_dev(sub: Any) -> None:
    p = sub.add_parser(
        "dev",
        help="run API, scheduler and a worker on embedded defaults (SQLite + embedded Redis)",
        description="The whole stack in one command. Without DATABASE_URL/REDIS_URL: SQLite under the data "
        "folder and an embedded redis-server on a free loopback port. Ctrl-C stops everything.",
    )
    p.add_argument("--data-dir", default=None, help="data folder (default: TASKYARD_DATA_DIR or ./.taskyard)")
    p.add_argument("--host", default=None, help="API listen host (default: from HTTP_ADDR, else 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="API listen port (default: from HTTP_ADDR, else 8000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes to run with the dev agent (default 1)")
    p.add_argument("--no-scheduler", action="store_true", help="do not start a scheduler")
    p.add_argument(
        "--redis-from-path", action="store_true", help="use redis-server from PATH instead of the bundled one"
    )
    p.set_defaults(func=_cmd_dev)


def _add_api(sub: Any) -> None:
    p = sub.add_parser(
        "api",
        help="run one API replica (uvicorn)",
        description="Serve REST and /ws. Settings from the environment (see docs/operations.md).",
    )
    p.add_argument("--host", default=None, help="listen host (default: from HTTP_ADDR)")
    p.add_argument("--port", type=int, default=None, help="listen port (default: from HTTP_ADDR)")
    p.add_argument(
        "--timeout-graceful-shutdown",
        type=int,
        default=DEFAULT_GRACEFUL_SHUTDOWN_S,
        help=f"seconds to drain connections on SIGTERM (default {DEFAULT_GRACEFUL_SHUTDOWN_S})",
    )
    # Kept so old command lines still start; the setting TASKYARD_API_TRUSTED_PROXIES decides.
    p.add_argument("--proxy-headers", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--forwarded-allow-ips", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_api)


def _add_exec(sub: Any, name: str, helptext: str) -> None:
    p = sub.add_parser(
        name,
        help=helptext,
        description=f"{helptext}. Replaces this process with `python -m {name} ARGS`: every option "
        f"after `taskyard {name}` is its own (`taskyard {name} --help` lists them).",
    )
    p.add_argument("args", nargs=argparse.REMAINDER, help=f"arguments for python -m {name}")
    p.set_defaults(func=_cmd_scheduler if name == "scheduler" else _cmd_worker)


def _add_migrate(sub: Any) -> None:
    p = sub.add_parser(
        "migrate",
        help="apply database migrations (DATABASE_URL, else the dev SQLite file)",
        description="Upgrade to head by default. `migrate downgrade --revision -1` steps back one.",
    )
    p.add_argument("action", nargs="?", choices=("upgrade", "downgrade", "current"), default="upgrade")
    p.add_argument("--revision", default=None, help="target revision (upgrade: default head; downgrade: required)")
    p.set_defaults(func=_cmd_migrate)


def _add_create_admin(sub: Any) -> None:
    p = sub.add_parser(
        "create-admin",
        help="create an admin user, or promote an existing one",
        description="Works against DATABASE_URL, else the dev SQLite file (the same one `make dev` uses). "
        "Migrates first. An existing user is promoted; a given password replaces theirs.",
    )
    p.add_argument("--email", required=True)
    p.add_argument("--name", default=None, help="display name (default: the email's local part)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--password", default=None, help="the password (visible in `ps`; prefer --password-stdin)")
    group.add_argument("--password-stdin", action="store_true", help="read the password from the first stdin line")
    p.set_defaults(func=_cmd_create_admin)


def _add_create_agent(sub: Any) -> None:
    p = sub.add_parser(
        "create-agent",
        help="create an agent and print its id and one-time token",
        description="Owned by --owner-email, else the first admin. The token is printed once and stored hashed.",
    )
    p.add_argument("--name", required=True)
    p.add_argument("--type", default="generic", help="free-text kind of agent (default generic)")
    p.add_argument("--capability", action="append", help="a capability (repeat for several)")
    p.add_argument("--concurrency", type=int, default=4, help="tasks run at once (default 4)")
    p.add_argument("--public", action="store_true", help="visible to and usable by every user")
    p.add_argument("--trusted", action="store_true", help="our own LLM worker: gets users' sealed LLM settings")
    p.add_argument("--owner-email", default=None)
    p.set_defaults(func=_cmd_create_agent)


def _add_jobs(sub: Any) -> None:
    p = sub.add_parser(
        "jobs",
        help="run the side-job process (rq worker + rq cron: retention purges, /metrics counts)",
        description="One rq worker on the side-job queue and rq's cron scheduler for the periodic jobs. "
        "Needs REDIS_URL and DATABASE_URL like the API.",
    )
    p.add_argument("--burst", action="store_true", help="run the queued jobs, then exit")
    p.add_argument("--no-cron", action="store_true", help="do not enqueue the periodic jobs from this process")
    p.set_defaults(func=_cmd_jobs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskyard",
        description="taskyard: a distributed task scheduler for LLM worker agents.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_dev(sub)
    _add_api(sub)
    _add_exec(sub, "scheduler", "run one scheduler replica")
    _add_exec(sub, "worker", "run one worker (one agent connection)")
    _add_migrate(sub)
    _add_create_admin(sub)
    _add_create_agent(sub)
    _add_jobs(sub)
    from taskyard.client import add_client_commands  # login, tasks, agents: a client of a running server

    add_client_commands(sub)
    return parser


_PASS_THROUGH = {"scheduler": _cmd_scheduler, "worker": _cmd_worker}
"""Subcommands whose options belong to `python -m <name>`: handed over untouched, `--help` included.

argparse cannot pass an option-like remainder (`taskyard worker --handlers m:attr` would be refused
as "unrecognized arguments"), so these never go through it.
"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("taskyard")
    except PackageNotFoundError:  # pragma: no cover - running from a tree that was never installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _PASS_THROUGH:
        return _PASS_THROUGH[argv[0]](argparse.Namespace(args=argv[1:]))
    parser = build_parser()
    parser.add_argument("--version", action="version", version=f"taskyard {_version()}")
    args = parser.parse_args(argv)
    from api.settings import SettingsError

    try:
        result: int = args.func(args)
    except SettingsError as exc:
        # A configuration mistake is the operator's to fix: one clear line, no traceback.
        print("taskyard: invalid settings: " + "; ".join(exc.problems), file=sys.stderr)
        return 2
    return result
