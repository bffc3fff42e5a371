"""`taskyard migrate | create-admin | create-agent`: the database chores, on DATABASE_URL or the dev SQLite file."""

from __future__ import annotations

import asyncio
import getpass
import sys

import click

from api.agents.schemas import MAX_AGENT_CONCURRENCY
from taskyard.startup import ready_settings

__all__ = ("create_admin", "create_agent", "migrate")


@click.command(
    help="Apply database migrations to DATABASE_URL, else the dev SQLite file. ACTION is upgrade (the default: "
    "to head, or to --revision), downgrade (--revision is required: a revision id, -1, or base) or current "
    "(print the revision only). Safe to run from several processes at once on PostgreSQL.",
    short_help="apply database migrations (DATABASE_URL, else the dev SQLite file)",
)
@click.argument("action", type=click.Choice(["upgrade", "downgrade", "current"]), default="upgrade")
@click.option("--revision", default=None, help="Target revision (upgrade: default head; downgrade: required).")
@click.pass_context
def migrate(ctx: click.Context, *, action: str, revision: str | None) -> None:
    from taskyard.migrate import async_database_url, current_revision, downgrade, upgrade

    if action == "downgrade" and not revision:
        raise click.UsageError("downgrade needs --revision (a revision id, -1, or base)", ctx)
    settings = ready_settings(ctx, redis=False, database=True, database_url=async_database_url)
    url = settings.database.url.reveal()
    if action == "upgrade":
        upgrade(url, revision or "head")
    elif action == "downgrade" and revision:
        downgrade(url, revision)
    click.echo(f"database at revision: {current_revision(url) or '(empty)'}")


def _read_password(password: str | None, password_stdin: bool) -> str | None:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if password is not None:
        return password
    if sys.stdin.isatty():
        return getpass.getpass("password for the admin: ")
    return None


@click.command(
    "create-admin",
    help="Create an admin user, or promote an existing one (a given password replaces theirs and ends their "
    "sessions). Works on DATABASE_URL, else the dev SQLite file (the one `make dev` uses); migrates first. "
    "Without a password option it is asked for on a terminal.",
    short_help="create an admin user, or promote an existing one",
)
@click.option("--email", required=True, help="The admin's email (stored lower-case).")
@click.option("--name", default=None, help="Display name (default: the email's local part).")
@click.option("--password", default=None, help="The password (visible in `ps`; prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first stdin line.")
@click.pass_context
def create_admin(
    ctx: click.Context, *, email: str, name: str | None, password: str | None, password_stdin: bool
) -> None:
    from taskyard.chores import ensure_admin
    from taskyard.migrate import upgrade

    if password is not None and password_stdin:
        raise click.UsageError("--password and --password-stdin are mutually exclusive", ctx)
    settings = ready_settings(ctx, redis=False, database=True)
    upgrade(settings.database.url.reveal(), "head")
    secret = _read_password(password, password_stdin)
    if secret is not None and len(secret) < 8:
        raise click.ClickException("the password must be at least 8 characters")
    user_id, outcome = asyncio.run(ensure_admin(settings, email=email, password=secret, name=name))
    click.echo(f"admin {email.strip().lower()} {outcome} (id {user_id})")


@click.command(
    "create-agent",
    help="Create an agent and print its id and one-time token (stored hashed; shown once). Owned by "
    "--owner-email, else the first admin. Works on DATABASE_URL, else the dev SQLite file; migrates first.",
    short_help="create an agent and print its id and one-time token",
)
@click.option("--name", required=True, help="The agent's name.")
@click.option("--type", "agent_type", default="generic", show_default=True, help="Free-text kind of agent.")
@click.option("--capability", multiple=True, help="A capability it offers (repeat for several).")
@click.option(
    "--concurrency",
    type=click.IntRange(1, MAX_AGENT_CONCURRENCY),
    default=4,
    show_default=True,
    help="Tasks run at once.",
)
@click.option("--public", is_flag=True, help="Visible to and usable by every user.")
@click.option("--trusted", is_flag=True, help="Our own LLM worker: it gets users' sealed LLM settings.")
@click.option("--owner-email", default=None, help="The owning user (default: the first admin).")
@click.pass_context
def create_agent(
    ctx: click.Context,
    *,
    name: str,
    agent_type: str,
    capability: tuple[str, ...],
    concurrency: int,
    public: bool,
    trusted: bool,
    owner_email: str | None,
) -> None:
    from taskyard.chores import create_agent as create
    from taskyard.migrate import upgrade

    settings = ready_settings(ctx, redis=False, database=True)
    upgrade(settings.database.url.reveal(), "head")
    agent_id, token = asyncio.run(
        create(
            settings,
            name=name,
            owner_email=owner_email,
            capabilities=list(capability),
            concurrency=concurrency,
            is_public=public,
            agent_type=agent_type,
            trusted=trusted,
        )
    )
    click.echo(f"agent id:    {agent_id}")
    click.echo(f"agent token: {token}")
    click.echo("The token is shown once; store it now (TASKYARD_WORKER_AGENT_ID / TASKYARD_WORKER_AGENT_TOKEN).")
