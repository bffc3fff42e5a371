"""`python -m worker` as a real process against the loopback fake API: exit codes, --check, SIGTERM drain."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from protocol.messages import TaskError
from tests.unit.worker.fake_api import WAIT_S, FakeApi

REPO = Path(__file__).resolve().parents[3]


def worker_env(api: FakeApi, token: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKYARD_WORKER_")}
    env.update(
        {
            "TASKYARD_WORKER_URL": api.url,
            "TASKYARD_WORKER_AGENT_ID": api.agent_id,
            "TASKYARD_WORKER_AGENT_TOKEN": token if token is not None else api.token,
            "TASKYARD_WORKER_BACKOFF_BASE_S": "0.05",
            "TASKYARD_WORKER_BACKOFF_MAX_S": "0.2",
        }
    )
    env.update(extra)
    return env


async def start_worker(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        *args,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    _, stderr = await asyncio.wait_for(proc.communicate(), WAIT_S)
    assert proc.returncode is not None
    return proc.returncode, stderr.decode()


async def test_help_exits_0() -> None:
    proc = await start_worker(dict(os.environ), "--help")
    stdout, _ = await asyncio.wait_for(proc.communicate(), WAIT_S)
    assert proc.returncode == 0
    assert b"--concurrency" in stdout


async def test_bad_settings_exit_2_listing_the_variables() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKYARD_WORKER_")}
    code, stderr = await finish(await start_worker({**env, "TASKYARD_WORKER_CONCURRENCY": "lots"}))
    assert code == 2
    assert "TASKYARD_WORKER_CONCURRENCY" in stderr
    assert "TASKYARD_WORKER_AGENT_TOKEN: required" in stderr


async def test_refused_credentials_exit_2_without_retrying() -> None:
    async with FakeApi() as api:
        code, stderr = await finish(await start_worker(worker_env(api, token="wrong-token")))
        assert code == 2
        assert "refused" in stderr
        assert "wrong-token" not in stderr
        assert len(api.handshakes) == 1


async def test_check_exits_0_when_authenticated_and_1_when_not() -> None:
    async with FakeApi() as api:
        env = worker_env(api)
        ok, _ = await finish(await start_worker(env, "--check"))
        refused, _ = await finish(await start_worker(worker_env(api, token="wrong"), "--check"))
    unreachable, _ = await finish(await start_worker(env, "--check"))  # the server is gone now
    assert (ok, refused, unreachable) == (0, 1, 1)


async def test_sigterm_hands_back_running_tasks_and_exits_0() -> None:
    async with FakeApi() as api:
        env = worker_env(api, TASKYARD_WORKER_DRAIN_TIMEOUT_S="0.5", TASKYARD_WORKER_CONCURRENCY="2")
        proc = await start_worker(env)
        await api.submit("long", "sleep", {"seconds": 3600, "progressEvery": 0.05})
        await api.wait_for(lambda: bool(api.frames("task/progress", "long")))
        proc.send_signal(signal.SIGTERM)
        code, stderr = await finish(proc)
        assert code == 0, stderr
        error = api.frames("task/error", "long")[0].frame.payload
        assert isinstance(error, TaskError)
        assert (error.error, error.retryable) == ("worker_shutdown", True)
        assert any(beat.draining for beat in api.heartbeats())


async def test_crash_handler_kills_the_process_only_when_enabled() -> None:
    async with FakeApi() as api:
        proc = await start_worker(worker_env(api), "--enable-crash-handler")
        await api.submit("poison", "crash")
        code, _ = await finish(proc)
        assert code == 1
        assert api.task_types("poison") == ["task/accept"]
