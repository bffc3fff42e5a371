"""`taskyard jobs`: one rq worker on the side-job queue plus rq's cron scheduler for the periodic jobs.

The worker runs in the main thread (rq installs its signal handlers there: first SIGTERM is a warm
shutdown that lets the running job finish). rq's `CronScheduler` normally runs as its own `rq cron`
process and installs signal handlers too; here it runs in a thread driven through its public steps
(`enqueue_jobs`, `save`, `heartbeat`), so one process is enough and it stops with the worker.

rq's `CronJob.enqueue` builds its queue with the default (pickle) serializer; `_JsonCronJob` enqueues
through our JSON queue instead, so the worker never has to unpickle anything. Every jobs process runs the
same cron, so each firing first claims its interval with `SET NX PX` on one key per periodic job: with
any number of jobs processes, each periodic job is enqueued once per interval.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import TYPE_CHECKING, Any

from rq import Worker
from rq.cron import CronJob, CronScheduler

from api.jobs import side_jobs
from api.jobs.queue import FAILURE_TTL_S, RESULT_TTL_S, SERIALIZER, ops_queue, queue_name, sync_redis

if TYPE_CHECKING:
    import redis

    from api.settings import ApiSettings

__all__ = ("OpsCron", "build_cron", "run_jobs")

logger = logging.getLogger(__name__)


class _JsonCronJob(CronJob):
    """A cron entry whose jobs go through our JSON-serializing queue."""

    def __init__(self, settings: ApiSettings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._settings = settings

    def claim_key(self) -> str:
        return f"{queue_name(self._settings)}:cron-claim:{self.name}"

    def enqueue(self, connection: redis.Redis) -> Any:
        if self.func is None:
            raise ValueError("a cron entry without a function")
        # A little less than the interval: the claiming process's own next firing never meets its old claim.
        hold_ms = max(1, int((self.interval or 1) * 900))
        if not connection.set(self.claim_key(), f"{socket.gethostname()}:{os.getpid()}", nx=True, px=hold_ms):
            return None  # another jobs process fired this interval
        job = ops_queue(self._settings, connection).enqueue(
            self.func, args=self.args, kwargs=self.kwargs, **self.job_options
        )
        # Keep rq's per-cron-job history (newest ids), which its tools read.
        if job.enqueued_at is not None:
            connection.zadd(self.job_history_key, {job.id: job.enqueued_at.timestamp()})
            connection.zremrangebyrank(self.job_history_key, 0, -101)
        return job


class OpsCron:
    """rq's `CronScheduler` with our periodic jobs, run in a thread until `stop()`."""

    def __init__(self, settings: ApiSettings, connection: redis.Redis) -> None:
        # One registry entry per process (rq-dashboard lists each jobs process's cron).
        name = f"{queue_name(settings)}.cron.{socket.gethostname()}.{os.getpid()}"
        self.scheduler = CronScheduler(connection=connection, name=name)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        ops = settings.ops
        periodic = [
            (side_jobs.fire_schedules, ops.schedules_tick_s),
            (side_jobs.scan_webhooks, ops.webhooks_tick_s),
            (side_jobs.purge_retention, ops.purge_interval_s),
        ]
        for func, interval in periodic:
            if interval <= 0:
                continue
            self.scheduler._cron_jobs.append(
                _JsonCronJob(
                    settings,
                    queue_name=queue_name(settings),
                    func=func,
                    interval=interval,
                    job_timeout=max(60, interval),
                    result_ttl=RESULT_TTL_S,
                    failure_ttl=FAILURE_TTL_S,
                    name=f"{queue_name(settings)}.{func.__name__}",
                )
            )

    @property
    def jobs(self) -> list[Any]:
        return list(self.scheduler.get_jobs())

    def _run(self) -> None:
        cron = self.scheduler
        cron.register_birth()
        try:
            while not self._stop.is_set():
                try:
                    if cron.enqueue_jobs():
                        cron.save()
                    cron.heartbeat()
                except Exception:  # a Redis blip must not end the schedule; the next tick retries
                    logger.exception("jobs: cron tick failed")
                self._stop.wait(max(0.2, cron.calculate_sleep_interval()))
        finally:
            cron.register_death()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="taskyard-cron", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def build_cron(settings: ApiSettings, connection: redis.Redis) -> OpsCron:
    return OpsCron(settings, connection)


def run_jobs(settings: ApiSettings, *, burst: bool = False, cron: bool = True) -> int:
    """Serve the side-job queue until SIGTERM/SIGINT (or, with `burst`, until it is empty)."""
    connection = sync_redis(settings)
    schedule = build_cron(settings, connection) if cron else None
    worker = Worker(
        [ops_queue(settings, connection)],
        connection=connection,
        serializer=SERIALIZER,
    )
    if schedule is not None:
        schedule.start()
    logger.info("jobs: serving rq queue %s", queue_name(settings))
    try:
        # The rq scheduler moves retries with a backoff (and enqueue_in jobs) back onto the queue.
        worker.work(with_scheduler=True, burst=burst, logging_level=settings.log_level)
    finally:
        if schedule is not None:
            schedule.stop()
        connection.close()
    return 0
