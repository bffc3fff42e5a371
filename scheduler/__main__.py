"""`python -m scheduler`: run one scheduler process until SIGTERM/SIGINT; `--check` probes liveness."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from redis.asyncio import Redis

from scheduler.errors import SchedulerSettingsError
from scheduler.keys import Keys
from scheduler.service import SchedulerService
from scheduler.settings import SchedulerSettings, load_settings

logger = logging.getLogger("scheduler")


async def _check(settings: SchedulerSettings) -> int:
    redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        alive = await redis.exists(Keys(settings.prefix).scheduler_heartbeat(settings.instance))
    except Exception:  # the probe answers 1 for any failure
        return 1
    finally:
        await redis.aclose()
    return 0 if alive else 1


async def _run(settings: SchedulerSettings) -> int:
    redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    blocking = Redis.from_url(settings.redis_url, socket_timeout=None, socket_connect_timeout=5)
    service = SchedulerService(redis, settings, blocking_redis=blocking)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
        await stop.wait()
        await service.stop()
    finally:
        await blocking.aclose()
        await redis.aclose()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=os.environ.get("TASKYARD_PROG", "python -m scheduler"), description="taskyard scheduler process"
    )
    parser.add_argument("--check", action="store_true", help="exit 0 if this host's scheduler is alive, else 1")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(os.environ)
    except SchedulerSettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.check:
        return asyncio.run(_check(settings))
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return asyncio.run(_run(settings))


if __name__ == "__main__":
    sys.exit(main())
