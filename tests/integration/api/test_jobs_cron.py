"""Several `taskyard jobs` processes run the same rq cron: each periodic job is still enqueued once per interval."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from api.jobs.process import OpsCron
from api.jobs.queue import ops_queue
from api.settings import load_settings
from tests.conftest import test_environ

pytestmark = pytest.mark.redis


def test_two_jobs_processes_enqueue_each_periodic_job_once(redis_url: str, redis_prefix: str, tmp_path: Any) -> None:
    environ = test_environ(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}",
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=str(tmp_path),
    )
    settings = load_settings(environ)
    connection = redis.Redis.from_url(redis_url)
    queue = ops_queue(settings, connection)
    try:
        first, second = OpsCron(settings, connection), OpsCron(settings, connection)
        periodic = {job.func_name for job in first.jobs}
        assert len(periodic) >= 3

        assert {job.func_name for job in first.scheduler.enqueue_jobs()} == periodic
        second.scheduler.enqueue_jobs()  # the same instant in another process: every claim is taken
        queued = [job.func_name for job in queue.get_jobs()]
        assert sorted(queued) == sorted(periodic)

        # The next interval (claims expired, both crons due again): whichever process comes first fires it, once.
        for job in [*first.jobs, *second.jobs]:
            connection.delete(job.claim_key())
            job.latest_enqueue_time = None
        second.scheduler.enqueue_jobs()
        first.scheduler.enqueue_jobs()
        queued = [job.func_name for job in queue.get_jobs()]
        assert sorted(queued) == sorted([*periodic, *periodic])
    finally:
        queue.empty()
        queue.delete(delete_jobs=True)
        connection.close()
