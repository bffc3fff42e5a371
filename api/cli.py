"""The `taskyard` command: one entry point for every process and the few admin chores.

`api` runs uvicorn in this process; `scheduler` and `worker` replace this process with
`python -m scheduler` / `python -m worker` (so `api` never imports `worker`); `dev` runs the whole
stack under a supervisor (`api.dev`). Settings are read from the environment once, here.
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

    from sqlalchemy.ext.asyncio import AsyncSession

    from api.settings import ApiSettings

__all__ = ("build_parser", "create_agent", "ensure_admin", "main")

DEFAULT_GRACEFUL_SHUTDOWN_S = 25
"""uvicorn's drain budget on SIGTERM; keep it below the pod's terminationGracePeriodSeconds (30 s)."""


# ---------------------------------------------------------------------------------------------
# Database chores shared with the dev supervisor
# ---------------------------------------------------------------------------------------------


async def _hash_password(settings: ApiSettings, password: str) -> str:
    """argon2id with the configured cost, through the same service the login path verifies with."""
    from api.auth.passwords import PasswordService

    service = PasswordService(
        time_cost=settings.auth.argon2_time_cost,
        memory_cost_kib=settings.auth.argon2_memory_cost_kib,
        parallelism=settings.auth.argon2_parallelism,
        concurrency=1,
    )
    return await service.hash(password)


async def ensure_admin(settings: ApiSettings, *, email: str, password: str | None, name: str | None) -> tuple[str, str]:
    """Create the admin, or promote (and reactivate) an existing user; a given password replaces the old one.

    Returns (user id, "created" | "promoted").
    """
    from sqlalchemy import select

    from api.db.base import utcnow
    from api.db.models.users import User
    from api.db.session import create_engine, create_sessionmaker

    email = email.strip().lower()
    engine = create_engine(settings.database)
    try:
        async with create_sessionmaker(engine)() as session:
            user = (await session.execute(select(User).where(User.email == email))).scalar_one_or_none()
            now = utcnow()
            if user is None:
                if not password:
                    raise SystemExit("create-admin: a new admin needs a password (--password or --password-stdin)")
                user = User(
                    email=email,
                    name=name or email.partition("@")[0],
                    password_hash=await _hash_password(settings, password),
                    role="admin",
                    is_active=True,
                    token_version=0,
                    created_at=now,
                    updated_at=now,
                )
                session.add(user)
                outcome = "created"
            else:
                user.role = "admin"
                user.is_active = True
                if name:
                    user.name = name
                if password:
                    user.password_hash = await _hash_password(settings, password)
                    # A reset password ends every session issued under the old one.
                    user.token_version += 1
                user.updated_at = now
                outcome = "promoted"
            _audit(session, action="cli_create_admin", target_id=None, details={"outcome": outcome})
            await session.flush()
            user_id = user.id
            await session.commit()
            return user_id, outcome
    finally:
        await engine.dispose()


def _audit(session: AsyncSession, *, action: str, target_id: str | None, details: dict[str, Any]) -> None:
    """An audit row for a CLI action (actor: the operator at the console, so no actor id)."""
    from api.audit import record

    record(
        session,
        action=action,
        outcome="success",
        actor_id=None,
        actor_role="cli",
        target_type="cli",
        target_id=target_id,
        details=details,
    )


async def create_agent(
    settings: ApiSettings,
    *,
    name: str,
    owner_email: str | None,
    capabilities: Sequence[str],
    concurrency: int,
    is_public: bool,
    agent_type: str = "generic",
    trusted: bool = False,
) -> tuple[str, str]:
    """Create an agent through the agents service (owner: `owner_email`, else the first admin).

    Returns (agent id, the one-time token).
    """
    from sqlalchemy import select

    from api.agents.schemas import AgentCreate
    from api.agents.service import AgentService
    from api.auth.identity import CurrentUser
    from api.db.models.users import User
    from api.db.session import create_engine, create_sessionmaker

    engine = create_engine(settings.database)
    try:
        async with create_sessionmaker(engine)() as session:
            query = select(User).where(User.is_active.is_(True))
            if owner_email:
                query = query.where(User.email == owner_email.strip().lower())
            else:
                query = query.where(User.role == "admin").order_by(User.created_at)
            owner = (await session.execute(query.limit(1))).scalar_one_or_none()
            if owner is None:
                raise SystemExit("create-agent: no such active user; run `taskyard create-admin` first")
            actor = CurrentUser(
                id=owner.id, email=owner.email, name=owner.name, role=owner.role, jti="cli", token_exp=0
            )
            data = AgentCreate(
                name=name,
                type=agent_type,
                capabilities=list(capabilities),
                concurrency=concurrency,
                is_public=is_public,
                trusted=trusted,
            )
            # Creating an agent touches only the database; the scheduler learns of it when it connects.
            service = AgentService(session, scheduler=None)  # type: ignore[arg-type]
            agent, created = await service.create(actor, data)
            _audit(session, action="cli_create_agent", target_id=agent.id, details={"name": name})
            await session.commit()
            return agent.id, created.token
    finally:
        await engine.dispose()


# ---------------------------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------------------------


def _load_settings(environ: Mapping[str, str] | None = None) -> ApiSettings:
    from api.settings import SettingsError, load_settings

    try:
        return load_settings(os.environ if environ is None else environ)
    except SettingsError as exc:
        raise SystemExit("taskyard: " + "\n  ".join(["invalid settings:", *exc.problems])) from exc


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
    os.execv(sys.executable, argv)  # noqa: S606 - fixed interpreter, arguments passed through as a list
    return 0  # pragma: no cover - execv does not return


def _cmd_scheduler(args: argparse.Namespace) -> int:
    return _exec_module("scheduler", args.args)


def _cmd_worker(args: argparse.Namespace) -> int:
    return _exec_module("worker", args.args)


def _cmd_migrate(args: argparse.Namespace) -> int:
    from api.migrate import current_revision, downgrade, upgrade

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
    from api.migrate import upgrade

    settings = _load_settings()
    upgrade(settings.database.url.reveal(), "head")
    password = _read_password(args)
    if password is not None and len(password) < 8:
        raise SystemExit("create-admin: the password must be at least 8 characters")
    user_id, outcome = asyncio.run(ensure_admin(settings, email=args.email, password=password, name=args.name))
    print(f"admin {args.email.strip().lower()} {outcome} (id {user_id})")
    return 0


def _cmd_create_agent(args: argparse.Namespace) -> int:
    from api.migrate import upgrade

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


def _cmd_dev(args: argparse.Namespace) -> int:
    from api.dev import DevOptions, run_dev

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
        description=f"{helptext}. Replaces this process with `python -m {name} ARGS`; "
        f"pass its own options after `--` (e.g. `taskyard {name} -- --help`).",
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result
