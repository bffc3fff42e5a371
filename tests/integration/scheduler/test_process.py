"""`python -m scheduler` as a real process: liveness probe, dispatch, clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid

from scheduler.client import SchedulerClient
from scheduler.types import AgentSpec
from tests.integration.scheduler.conftest import spec


def _env(redis_url: str, prefix: str, instance: str) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "TASKYARD_REDIS_PREFIX": prefix,
        "TASKYARD_SCHEDULER_INSTANCE": instance,
        "TASKYARD_SCHEDULER_SWEEP_INTERVAL_S": "0.1",
    }


async def _check(env: dict[str, str]) -> int:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "scheduler", "--check", env=env)
    return await proc.wait()


async def test_process_dispatches_answers_check_and_stops_on_sigterm(redis_url, redis_prefix, redis_client) -> None:
    env = _env(redis_url, redis_prefix, f"proc-{uuid.uuid4().hex[:8]}")
    assert await _check(env) == 1  # nothing running yet
    proc = subprocess.Popen([sys.executable, "-m", "scheduler"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        async with asyncio.timeout(20):
            while await _check(env) != 0:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                await asyncio.sleep(0.05)
        sched = SchedulerClient(redis_client, prefix=redis_prefix)
        await sched.agent_online(AgentSpec("a1", "owner-1", (), 1), lease_s=30)
        await sched.enqueue(spec("t1"))
        async with asyncio.timeout(20):
            while not (entries := await sched.read_inbox("a1", "c", block_ms=100, count=10)):
                pass
        assert entries[0].task_id == "t1"
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            while proc.poll() is None:
                await asyncio.sleep(0.05)
        assert proc.returncode == 0
        log = proc.stderr.read() if proc.stderr else ""
        assert "scheduler started" in log
        assert "scheduler stopped" in log
        assert await _check(env) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


async def test_bad_settings_exit_2_with_every_problem(redis_url, redis_prefix) -> None:
    env = {**_env(redis_url, redis_prefix, "x"), "TASKYARD_SCHEDULER_DISPATCH_BATCH": "many"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scheduler", env=env, stderr=asyncio.subprocess.PIPE
    )
    _out, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"TASKYARD_SCHEDULER_DISPATCH_BATCH" in err
