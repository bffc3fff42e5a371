"""`taskyard login | tasks | agents` as real subprocesses against real API, scheduler and worker processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.llm_support import FakeLlm
from tests.e2e.stack import ADMIN_EMAIL, ADMIN_PASSWORD, Stack, wait_until

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def taskyard() -> list[str]:
    """The installed `taskyard` command, as a user runs it (else the module behind it)."""
    script = Path(sys.executable).with_name("taskyard")
    return [str(script)] if script.exists() else [sys.executable, "-m", "taskyard"]


def _env(stack: Stack, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(stack.workdir),
        "PYTHONUNBUFFERED": "1",
        "TASKYARD_CLIENT_CONFIG": str(stack.workdir / "client.json"),
    }
    env.update(extra)
    return env


def cli(stack: Stack, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*taskyard(), *args],
        cwd=ROOT,
        env=_env(stack, **env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _llm_worker(stack: Stack) -> FakeLlm:
    stack.create_admin()
    fake = FakeLlm(stack)
    agent_id, token = stack.create_agent(capabilities=["llm"], concurrency=4, name="llm-worker")
    stack.start_worker(agent_id, token, **fake.worker_env())
    return fake


def _chat_input(model: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": "hi"}], "model": model})


def test_login_submit_list_get_cancel_and_isolation(stack: Stack) -> None:
    stack.create_admin()
    stack.register_user("alice@example.com")
    login = cli(
        stack, "login", "--url", stack.api_url, "--email", ADMIN_EMAIL, "--password-stdin", stdin=ADMIN_PASSWORD + "\n"
    )
    assert login.returncode == 0, login.stderr
    config = stack.workdir / "client.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text())["url"] == stack.api_url

    # Everything below uses the saved session (no --url, no --token).
    submitted = cli(stack, "tasks", "submit", "echo", "--input", '{"n": 1}', "--capability", "nobody", "--json")
    assert submitted.returncode == 0, submitted.stderr
    task = json.loads(submitted.stdout)
    assert task["status"] == "queued"
    plain = cli(stack, "tasks", "submit", "noop", "--capability", "nobody")
    assert plain.returncode == 0
    second_id = plain.stdout.strip()

    listed = json.loads(cli(stack, "tasks", "list", "--json").stdout)
    assert {t["id"] for t in listed["items"]} == {task["id"], second_id}
    table = cli(stack, "tasks", "list", "--status", "queued")
    assert task["id"] in table.stdout
    assert table.stdout.splitlines()[0].split() == ["ID", "STATUS", "TYPE", "PRI", "CREATED"]

    got = json.loads(cli(stack, "tasks", "get", task["id"], "--json").stdout)
    assert got["input"] == {"n": 1}
    canceled = cli(stack, "tasks", "cancel", task["id"])
    assert canceled.returncode == 0
    assert canceled.stdout.strip() == f"{task['id']} canceled"
    again = cli(stack, "tasks", "cancel", task["id"])
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1
    assert again.stderr.startswith("taskyard: error: ")

    # Alice (by environment variables this time) sees none of it.
    alice = {"TASKYARD_URL": stack.api_url, "TASKYARD_TOKEN": stack.login("alice@example.com", "user-password-123")}
    mine = json.loads(cli(stack, "tasks", "list", "--json", **alice).stdout)
    assert mine["items"] == []
    foreign = cli(stack, "tasks", "get", task["id"], **alice)
    assert foreign.returncode == 1
    assert "not_found" in foreign.stderr
    assert "n" not in foreign.stdout
    watched = cli(stack, "tasks", "watch", second_id, **alice)
    assert watched.returncode == 1
    assert "not_found" in watched.stderr

    # Bad input is one line and a non-zero exit, before anything reaches the server.
    bad = cli(stack, "tasks", "submit", "echo", "--input", "{nope")
    assert bad.returncode == 1
    assert bad.stderr.startswith("taskyard: error: --input is not valid JSON")
    assert bad.stderr.count("\n") == 1
    agents = cli(stack, "agents", "list", "--json")
    assert agents.returncode == 0
    assert json.loads(agents.stdout)["items"] == []


def test_watch_follows_a_stream_to_done_failed_and_canceled(stack: Stack) -> None:
    fake = _llm_worker(stack)
    env = {"TASKYARD_URL": stack.api_url, "TASKYARD_TOKEN": stack.create_admin()}
    words = [f"w{i} " for i in range(25)] + ["世界"]
    fake.script("stream", {"tokens": words, "token_delay_ms": 40})

    done = cli(
        stack, "tasks", "submit", "llm.chat", "--input", _chat_input("stream"), "--capability", "llm", "--watch", **env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "".join(words).strip()
    assert "[running]" in done.stderr
    assert "[done]" in done.stderr

    failed = cli(
        stack, "tasks", "submit", "fail", "--input", '{"retryable": false}', "--capability", "llm", "--watch", **env
    )
    assert failed.returncode == 3, failed.stderr
    assert "planned_failure" in failed.stderr

    slept = cli(
        stack,
        *("tasks", "submit", "sleep", "--input", '{"seconds": 1.5, "progressEvery": 0.3}', "--capability", "llm"),
        "--watch",
        **env,
    )
    assert slept.returncode == 0, slept.stderr
    assert "progress: " in slept.stderr
    assert "%" in slept.stderr
    assert json.loads(slept.stdout) == {"sleptS": 1.5}

    # Watching with --json: one event per line, in seq order, then the task.
    task_id = stack.submit(env["TASKYARD_TOKEN"], type="echo", input={"x": 1}, capabilities=["llm"])["id"]
    as_json = cli(stack, "tasks", "watch", task_id, "--json", **env)
    assert as_json.returncode == 0
    lines = [json.loads(line) for line in as_json.stdout.splitlines()]
    seqs = [e["seq"] for e in lines if "seq" in e]
    assert seqs == sorted(seqs)
    assert lines[-1]["type"] == "task"
    assert lines[-1]["task"]["result"] == {"x": 1}

    fake.script("slow", {"tokens": [f"t{i} " for i in range(300)], "token_delay_ms": 100})
    slow_id = stack.submit(
        env["TASKYARD_TOKEN"], type="llm.chat", input=json.loads(_chat_input("slow")), capabilities=["llm"]
    )["id"]
    watcher = subprocess.Popen(
        [*taskyard(), "tasks", "watch", slow_id],
        cwd=ROOT,
        env=_env(stack, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def streaming() -> bool:
            return any(e["type"] == "task/stream" for e in stack.task(env["TASKYARD_TOKEN"], slow_id)["events"] or [])

        wait_until(streaming, timeout_s=60, what="the slow stream to start")
        time.sleep(1.0)
        with stack.http(env["TASKYARD_TOKEN"]) as client:
            assert client.post(f"/api/tasks/{slow_id}/cancel").status_code == 200
        out, err = watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 4, err
    assert out.startswith("t0 t1 ")
    assert "[canceled]" in err


def test_every_client_subcommand_has_help(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
        return subprocess.run([*taskyard(), *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False)

    for args in (
        ("login",),
        ("tasks",),
        ("tasks", "submit"),
        ("tasks", "list"),
        ("tasks", "get"),
        ("tasks", "watch"),
        ("tasks", "cancel"),
        ("agents",),
        ("agents", "list"),
    ):
        result = run(*args, "--help")
        assert result.returncode == 0, args
        assert result.stdout.startswith("Usage: taskyard")
    assert "Exit codes" in run("tasks", "watch", "--help").stdout
    assert "--json" in run("agents", "list", "--help").stdout
    assert run("tasks").returncode == 2  # an action is required
    bad = run("tasks", "submit", "echo", "--priority", "12")
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("taskyard tasks submit: error: argument --priority")
