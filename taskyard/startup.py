"""The API's settings and the services a command needs, checked before it starts: or one line and an exit code.

A bad value, a malformed URL or a service that does not answer ends the command here with one line on stderr
(exit 2 for a configuration mistake, 1 for an unreachable service), never with a traceback from a lifespan.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import click

from api.preflight import ConfigurationError, PreflightError, check_database, check_redis, exit_code
from api.settings import SettingsError, load_settings

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from api.settings import ApiSettings

__all__ = ("ready_settings",)


def ready_settings(
    ctx: click.Context,
    *,
    redis: bool,
    database: bool,
    database_url: Callable[[str], str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ApiSettings:
    """Load the settings (from `environ`, default the process') and check the database (as `database_url` maps
    its URL) and Redis, when asked.

    Ends the command (click's `ctx.exit`) with one line on stderr when something is wrong.
    """
    try:
        settings = load_settings(os.environ if environ is None else environ)
        if database:
            url = settings.database.url.reveal()
            try:
                url = database_url(url) if database_url is not None else url
            except ValueError as exc:
                raise ConfigurationError(f"invalid settings: DATABASE_URL: {exc}") from exc
            asyncio.run(check_database(url))
        if redis:
            asyncio.run(check_redis(settings))
    except (SettingsError, PreflightError) as exc:
        click.echo(f"{ctx.command_path}: {exc}", err=True)
        ctx.exit(exit_code(exc))
    return settings
