"""`taskyard jobs` as a real process: rq cron enqueues the purge, the rq worker runs it (and it keeps the
finished-task counters `/metrics` reads in step with the rows it deletes)."""

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


def _gauge(stack: Stack, status: str) -> float:
    metrics = httpx.get(f"{stack.api_url}/metrics", timeout=10).text
    lines = [line for line in metrics.splitlines() if line.startswith(f'taskyard_tasks{{status="{status}"}}')]
    assert lines, metrics[-2000:]
    return float(lines[0].split()[-1])


def _done_rows(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM tasks WHERE status = 'done'")).scalar_one())


def test_jobs_process_purges_old_tasks_and_keeps_the_counts(stack: Stack) -> None:
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
        # The first scrape seeds the finished-task counters from the database (the old task counts as done).
        assert _gauge(stack, "done") == _done_rows(engine)
    finally:
        engine.dispose()

    jobs = stack.spawn("jobs", [sys.executable, "-m", "api.jobs"], TASKYARD_API_PURGE_INTERVAL_S="1")

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
    finally:
        connection.close()

    # The purge subtracted what it deleted: the gauge is the database's count again, without a recount.
    engine = sa.create_engine(_sync_url(stack.database_url))
    try:
        assert _gauge(stack, "done") == _done_rows(engine)
    finally:
        engine.dispose()
    assert _gauge(stack, "queued") >= 1

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
        job = enqueue(settings, connection, side_jobs.purge_retention, kwargs={})
        # The console script (the same in every layout of the package).
        taskyard = str(Path(sys.executable).parent / "taskyard")
        result = subprocess.run(
            [taskyard, "jobs", "--burst", "--no-cron"], env=stack.env(), capture_output=True, timeout=120, check=False
        )
        assert result.returncode == 0, result.stderr.decode()[-4000:]
        job.refresh()
        assert job.get_status() == "finished"
        assert set(job.return_value()) >= {"tasks", "batches"}
    finally:
        connection.close()
