"""`taskyard jobs` as a real process: rq cron enqueues the purge and the counts, the rq worker runs them."""

from __future__ import annotations

import signal
import sys

import httpx
import pytest
import redis
import sqlalchemy as sa
from rq import Queue
from rq.serializers import JSONSerializer

from tests.e2e.stack import Stack, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.timeout(180)]


def _sync_url(url: str) -> str:
    return url.replace("+aiosqlite", "")


def test_jobs_process_purges_old_tasks_and_publishes_counts(stack: Stack) -> None:
    token = stack.register_user("ops-user@example.com")
    old = stack.submit(token, type="echo", capabilities=["nobody-has-this"])
    kept = stack.submit(token, type="echo", capabilities=["nobody-has-this"])
    engine = sa.create_engine(_sync_url(stack.database_url))
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE tasks SET status = 'done', finished_at = :at WHERE id = :id"),
                {"at": "2001-01-01 00:00:00+00:00", "id": old["id"]},
            )
    finally:
        engine.dispose()

    jobs = stack.spawn(
        "jobs",
        [sys.executable, "-m", "api.jobs"],
        TASKYARD_API_PURGE_INTERVAL_S="1",
        TASKYARD_API_COUNTS_INTERVAL_S="1",
    )

    def purged() -> bool:
        assert jobs.alive(), jobs.log()[-4000:]
        with stack.http(token) as client:
            return client.get(f"/api/tasks/{old['id']}").status_code == 404

    wait_until(purged, timeout_s=60, what="the old finished task purged by the jobs process")
    assert stack.task(token, kept["id"])["status"] == "queued"

    # The jobs ran through rq: finished purge jobs with their report as the (JSON) result.
    connection = redis.Redis.from_url(stack.redis_url)
    try:
        queue = Queue(f"{stack.prefix}.ops", connection=connection, serializer=JSONSerializer)

        def finished_purge() -> bool:
            for job_id in queue.finished_job_registry.get_job_ids():
                job = queue.fetch_job(job_id)
                if job is not None and job.func_name.endswith("purge_retention"):
                    result = job.return_value()
                    return isinstance(result, dict) and "tasks" in result
            return False

        wait_until(finished_purge, timeout_s=30, what="a finished purge job in rq's registry")
        wait_until(
            lambda: connection.exists(f"{stack.prefix}:ops:task_counts") == 1,
            timeout_s=30,
            what="published task counts",
        )
    finally:
        connection.close()

    metrics = httpx.get(f"{stack.api_url}/metrics", timeout=10).text
    queued = [line for line in metrics.splitlines() if line.startswith('taskyard_tasks{status="queued"}')]
    assert queued
    assert float(queued[0].split()[-1]) >= 1

    # SIGTERM: rq's warm shutdown, exit code 0.
    stack.kill(jobs, signal.SIGTERM)
    assert jobs.popen.returncode == 0, jobs.log()[-4000:]


def test_jobs_process_fires_a_schedule_through_the_task_path(stack: Stack) -> None:
    # An API that accepts a 1 s interval (the default minimum is a minute).
    api = stack.start_api(name="api-fast", TASKYARD_API_SCHEDULE_MIN_INTERVAL_S="1")
    token = stack.register_user("sched-user@example.com")
    headers = {"Authorization": f"Bearer {token}"}
    body = {
        "name": "every two seconds",
        "intervalSeconds": 2,
        "task": {"type": "echo", "input": {"hello": "world"}, "capabilities": ["nobody-has-this"]},
    }
    created = httpx.post(f"{api}/api/schedules", json=body, headers=headers, timeout=10)
    assert created.status_code == 201, created.text
    sid = created.json()["id"]

    jobs = stack.spawn("jobs", [sys.executable, "-m", "api.jobs"], TASKYARD_API_SCHEDULES_TICK_S="1")

    def runs() -> list[dict[str, object]]:
        assert jobs.alive(), jobs.log()[-4000:]
        r = httpx.get(f"{api}/api/schedules/{sid}/runs", headers=headers, timeout=10)
        assert r.status_code == 200, r.text
        items: list[dict[str, object]] = r.json()["items"]
        return items

    wait_until(lambda: len([r for r in runs() if r["outcome"] == "submitted"]) >= 2, timeout_s=60, what="two firings")
    submitted = [r for r in runs() if r["outcome"] == "submitted"]
    for run in submitted:
        task = stack.task(token, str(run["taskId"]))
        assert task["type"] == "echo"
        assert task["input"] == {"hello": "world"}
        assert task["idempotencyKey"].startswith(f"schedule:{sid}:")
    assert len({r["fireAt"] for r in submitted}) == len(submitted)
    stack.kill(jobs, signal.SIGTERM)


def test_taskyard_jobs_burst_runs_what_is_queued_and_exits(stack: Stack) -> None:
    import subprocess
    from pathlib import Path

    from api.jobs import side_jobs
    from api.jobs.queue import enqueue
    from api.settings import load_settings

    settings = load_settings(stack.env())
    connection = redis.Redis.from_url(stack.redis_url)
    try:
        job = enqueue(settings, connection, side_jobs.refresh_task_counts, kwargs={})
        # The console script (the same in every layout of the package).
        taskyard = str(Path(sys.executable).parent / "taskyard")
        result = subprocess.run(
            [taskyard, "jobs", "--burst", "--no-cron"], env=stack.env(), capture_output=True, timeout=120, check=False
        )
        assert result.returncode == 0, result.stderr.decode()[-4000:]
        job.refresh()
        assert job.get_status() == "finished"
        assert set(job.return_value()) >= {"queued", "done", "failed"}
        assert connection.exists(f"{stack.prefix}:ops:task_counts") == 1
    finally:
        connection.close()
