"""`taskyard scheduler` / `python -m scheduler`: one click command, so its options are defined once.

Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 1 when Redis cannot be reached (or `--check` finds no
live scheduler on this host), 2 for bad settings. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import TYPE_CHECKING, NoReturn

import click
from redis.asyncio import Redis
from redis.exceptions import RedisError

from scheduler.errors import SchedulerSettingsError
from scheduler.keys import Keys
from scheduler.runtime import run as run_loop
from scheduler.service import SchedulerService
from scheduler.settings import load_settings

if TYPE_CHECKING:
    from scheduler.settings import SchedulerSettings

__all__ = ("EXIT_CONFIG", "EXIT_UNREACHABLE", "command", "main")

EXIT_UNREACHABLE = 1
EXIT_CONFIG = 2
_CONNECT_TIMEOUT_S = 5


class _RedisUnreachableError(Exception):
    """Redis did not answer the first ping: one line for the operator, not a traceback."""


def _redis(settings: SchedulerSettings, *, blocking: bool = False) -> Redis:
    timeout = None if blocking else _CONNECT_TIMEOUT_S
    return Redis.from_url(settings.redis_url, socket_timeout=timeout, socket_connect_timeout=_CONNECT_TIMEOUT_S)


async def _check(settings: SchedulerSettings) -> int:
    redis = _redis(settings)
    try:
        alive = await redis.exists(Keys(settings.prefix).scheduler_heartbeat(settings.instance))
    except Exception:  # the probe answers 1 for any failure
        return 1
    finally:
        await redis.aclose()
    return 0 if alive else 1


async def _run(settings: SchedulerSettings) -> int:
    redis = _redis(settings)
    blocking = _redis(settings, blocking=True)
    service = SchedulerService(redis, settings, blocking_redis=blocking)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await redis.ping()
        except (RedisError, OSError) as exc:
            raise _RedisUnreachableError(str(exc)) from exc
        await service.start()
        await stop.wait()
        await service.stop()
    finally:
        await blocking.aclose()
        await redis.aclose()
    return 0


def _fail(ctx: click.Context, message: str, code: int) -> NoReturn:
    click.echo(f"{ctx.command_path}: {message}", err=True)
    ctx.exit(code)


@click.command(
    "scheduler",
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Run one scheduler replica until SIGTERM/SIGINT. Talks to Redis only (REDIS_URL, "
    "TASKYARD_REDIS_PREFIX, TASKYARD_SCHEDULER_*, or the TASKYARD_CONFIG file; see docs/operations.md). "
    "Exit codes: 0 stopped cleanly, "
    "1 Redis unreachable, 2 bad settings.",
    short_help="run one scheduler replica",
)
@click.option("--check", is_flag=True, help="Exit 0 if this host's scheduler is alive, else 1 (a liveness probe).")
@click.pass_context
def command(ctx: click.Context, check: bool) -> None:
    try:
        settings = load_settings(os.environ)
        # Parse the URL now: a malformed one is a configuration mistake, not a connection failure.
        Redis.from_url(settings.redis_url)
    except SchedulerSettingsError as exc:
        _fail(ctx, str(exc), EXIT_CONFIG)
    except ValueError as exc:
        _fail(ctx, f"invalid settings: REDIS_URL: {exc}", EXIT_CONFIG)
    if check:
        ctx.exit(asyncio.run(_check(settings)))
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        code = run_loop(_run(settings))
    except _RedisUnreachableError as exc:
        _fail(ctx, f"cannot reach Redis: {exc}", EXIT_UNREACHABLE)
    ctx.exit(code)


def main(argv: list[str] | None = None) -> None:
    """`python -m scheduler` (the prog name follows TASKYARD_PROG when another command started it)."""
    command.main(args=argv, prog_name=os.environ.get("TASKYARD_PROG", "python -m scheduler"))
