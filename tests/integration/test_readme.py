"""The README's command blocks, run as written against a real `taskyard dev` stack.

Only what differs on a test machine is substituted: the port, the printed password, the ids the
commands print, and `.venv/bin/taskyard` by this interpreter's `-m taskyard`. The handler module the
worker block names is the README's own Python block, written to disk.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import free_port
from tests.integration.test_cli_dev import DevProcess, _ready, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section_blocks(heading: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block under `## heading`, up to the next `## `."""
    start = README.index(f"## {heading}\n")
    end = README.find("\n## ", start + 1)
    text = README[start : end if end != -1 else len(README)]
    return [(m["lang"], m["body"]) for m in re.finditer(r"```(?P<lang>\w*)\n(?P<body>.*?)```", text, re.S)]


def shell_commands(body: str) -> list[str]:
    """A shell block's commands: paragraphs separated by blank lines."""
    return [part.strip() for part in body.split("\n\n") if part.strip()]


@pytest.fixture
def dev(tmp_data_dir: Path) -> Iterator[DevProcess]:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (the README's examples use it)")
    stack = DevProcess(tmp_data_dir, free_port())
    try:
        wait_for(lambda: _ready(stack), timeout_s=90, what="/readyz 200", dev=stack)
        yield stack
    finally:
        stack.stop(signal.SIGTERM)


def _bash(script: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 0, f"{script}\n---\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _as_tested(command: str, dev: DevProcess) -> str:
    password = json.loads((dev.data_dir / "dev.json").read_text())["admin"]["password"]
    ws_url = dev.base_url.replace("http", "ws", 1)
    command = command.replace("http://127.0.0.1:8000", dev.base_url).replace("ws://127.0.0.1:8000", ws_url)
    command = command.replace("<printed password>", password)
    return command.replace(".venv/bin/taskyard", f"{shlex.quote(sys.executable)} -m taskyard")


def _wait_done(get_task: str, dev: DevProcess) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        task: dict[str, Any] = json.loads(_bash(get_task))
        return task if task["status"] in ("done", "failed", "canceled") else None

    return wait_for(finished, timeout_s=60, what="the task to end", dev=dev)  # type: ignore[no-any-return]


def test_submit_a_task_with_curl(dev: DevProcess) -> None:
    [(_, body)] = section_blocks("Submit a task with curl")
    login, submit, get = (_as_tested(c, dev) for c in shell_commands(body))
    created = json.loads(_bash(f"{login}\n{submit}"))
    assert created["status"] in ("queued", "assigned", "running", "done")
    task = _wait_done(f"{login}\n{get.replace('<id>', created['id'])}", dev)
    assert task["status"] == "done", task
    assert task["result"] == {"text": "hello"}


def test_run_a_worker_with_the_readme_handlers(dev: DevProcess, tmp_path: Path) -> None:
    blocks = section_blocks("Run a worker")
    [shell] = [body for lang, body in blocks if lang == ""]
    [handlers] = [body for lang, body in blocks if lang == "python"]
    package = tmp_path / "mypackage"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "handlers.py").write_text(handlers)

    create_agent, start_worker = (_as_tested(line, dev) for line in shell.split("\n", 1))
    env = {**os.environ, "TASKYARD_DATA_DIR": str(dev.data_dir), "APP_ENV": "dev"}
    env = {k: v for k, v in env.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    created = _bash(create_agent, env)
    agent_id = re.search(r"agent id:\s+(\S+)", created)
    token = re.search(r"agent token:\s+(\S+)", created)
    assert agent_id, created
    assert token, created
    start_worker = start_worker.replace("<id>", agent_id[1]).replace("<token>", token[1])
    # One simple command: bash runs it in its own process, in a session of its own we can stop whole.
    worker = subprocess.Popen(
        ["bash", "-c", start_worker],
        env={**env, "PYTHONPATH": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        password = json.loads((dev.data_dir / "dev.json").read_text())["admin"]["password"]
        login = httpx.post(
            f"{dev.base_url}/api/auth/login", json={"email": "admin@taskyard.dev", "password": password}, timeout=10
        )
        headers = {"Authorization": f"Bearer {login.json()['accessToken']}"}
        response = httpx.post(
            f"{dev.base_url}/api/tasks",
            json={"type": "summarize", "input": {"text": "x" * 150}, "agentId": agent_id[1]},
            headers=headers,
            timeout=10,
        )
        assert response.status_code == 201, response.text
        task_url = f"{dev.base_url}/api/tasks/{response.json()['id']}"

        def finished() -> dict[str, Any] | None:
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
            task: dict[str, Any] = httpx.get(task_url, headers=headers, timeout=10).json()
            return task if task["status"] in ("done", "failed", "canceled") else None

        task = wait_for(finished, timeout_s=60, what="the README handler's task", dev=dev)
        assert task["status"] == "done", task
        assert task["result"] == {"summary": "x" * 100}
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
        if worker.stderr is not None:
            worker.stderr.close()
