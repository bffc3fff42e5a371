"""`taskyard dev` as a real process tree: embedded Redis + SQLite, API ready, dev agent online, clean teardown."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import free_port
from tests.integration.test_cli import cli_env

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

_PID_LINE = re.compile(
    r"(?:started (?P<name>[\w-]+) \(pid (?P<pid>\d+)\)|embedded redis-server on \S+ \(pid (?P<rpid>\d+))"
)
_BANNER_END = "Ctrl-C stops everything."


class DevProcess:
    """`python -m taskyard dev` with its merged output collected by a reader thread (a full pipe would block it)."""

    def __init__(self, data_dir: Path, port: int, *extra: str, env_extra: dict[str, str] | None = None) -> None:
        env = cli_env(data_dir, **(env_extra or {}))
        env.pop("JWT_SECRET")  # the dev stack keeps its own secret in the data folder
        self.port = port
        self.data_dir = data_dir
        self.process = subprocess.Popen(
            [sys.executable, "-m", "taskyard", "dev", "--data-dir", str(data_dir), "--port", str(port), *extra],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def pids(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for line in list(self.lines):
            match = _PID_LINE.search(line)
            if match and match["name"]:
                found[match["name"]] = int(match["pid"])
            elif match and match["rpid"]:
                found["redis"] = int(match["rpid"])
        return found

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout_s)
        self._reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def wait_for(predicate: Callable[[], Any], *, timeout_s: float, what: str, dev: DevProcess) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if dev.process.poll() is not None:
            pytest.fail(f"taskyard dev exited with {dev.process.returncode} while waiting for {what}:\n{dev.output}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}:\n{dev.output}")


def _ready(dev: DevProcess) -> bool:
    """/readyz answers 200 and the supervisor has printed its banner (it prints after starting workers)."""
    if _BANNER_END not in dev.output:
        return False
    try:
        return httpx.get(f"{dev.base_url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0) until its parent (or init) reaps it; count it as gone.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _port_free(port: int) -> bool:
    """Nobody listens on the port (SO_REUSEADDR, as servers use: TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _all_gone(pids: dict[str, int]) -> bool:
    return not any(_pid_alive(pid) for pid in pids.values())


def _login(dev: DevProcess) -> str:
    state = json.loads((dev.data_dir / "dev.json").read_text())
    response = httpx.post(
        f"{dev.base_url}/api/auth/login",
        json={"email": state["admin"]["email"], "password": state["admin"]["password"]},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["accessToken"]
    return token


def _online_in_redis(dev: DevProcess, agent_id: str) -> bool:
    import redis.asyncio

    from scheduler.client import SchedulerClient

    match = re.search(r"embedded redis-server on (\S+) ", dev.output)
    assert match, dev.output

    async def check() -> bool:
        client = redis.asyncio.Redis.from_url(match[1], socket_timeout=5)
        try:
            return await SchedulerClient(client, prefix="taskyard").is_online(agent_id)
        finally:
            await client.aclose()

    return asyncio.run(check())


@pytest.fixture
def dev_processes() -> Iterator[list[DevProcess]]:
    started: list[DevProcess] = []
    yield started
    for dev in started:  # a failed test must not leave a stack behind; stop() also closes the pipe
        dev.stop(signal.SIGTERM)


def _needs_module(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not there yet, so `taskyard dev` cannot start it")


def test_dev_starts_the_stack_and_sigint_stops_every_child(tmp_data_dir: Path, dev_processes: list[DevProcess]) -> None:
    _needs_module("scheduler.__main__")
    _needs_module("worker.__main__")
    dev = DevProcess(tmp_data_dir, free_port())
    dev_processes.append(dev)
    wait_for(lambda: _ready(dev), timeout_s=90, what="/readyz 200", dev=dev)
    assert f"console:  {dev.base_url}/console" in dev.output
    console = httpx.get(f"{dev.base_url}/console", timeout=5)
    assert console.status_code == 200, console.text[:200]

    state = json.loads((tmp_data_dir / "dev.json").read_text())
    agent_id = state["agent"]["id"]
    headers = {"Authorization": f"Bearer {_login(dev)}"}

    def agent_online() -> bool:
        response = httpx.get(f"{dev.base_url}/api/agents", headers=headers, timeout=5)
        if response.status_code == 404:
            # The agents REST route is not wired yet: ask the scheduler's presence directly.
            return _online_in_redis(dev, agent_id)
        assert response.status_code == 200, response.text
        return any(a["id"] == agent_id and a["online"] for a in response.json()["items"])

    wait_for(agent_online, timeout_s=60, what="the dev agent online", dev=dev)
    pids = dev.pids()
    assert {"api", "scheduler", "jobs", "worker-1", "redis"} <= set(pids), dev.output

    assert dev.stop(signal.SIGINT) == 0, dev.output
    wait_for(lambda: _all_gone(pids), timeout_s=15, what="every child gone", dev=dev)
    assert _port_free(dev.port)
    assert "stopped (exit code 0)" in dev.output


def test_dev_restarts_a_killed_api_and_reuses_credentials(tmp_data_dir: Path, dev_processes: list[DevProcess]) -> None:
    first = DevProcess(tmp_data_dir, free_port(), "--workers", "0", "--no-scheduler")
    dev_processes.append(first)
    wait_for(lambda: _ready(first), timeout_s=90, what="/readyz 200", dev=first)
    assert "(created now)" in first.output
    pids = first.pids()
    assert {"api", "redis"} <= set(pids), first.output

    os.kill(pids["api"], signal.SIGKILL)
    # No signal to the supervisor: it notices the death by itself, says so, and starts the API again.
    wait_for(lambda: re.search(r"restarted api \(pid \d+\)", first.output), timeout_s=60, what="api restart", dev=first)
    assert re.search(r"api \(pid \d+\) exited with code -9; restarting it in \d+ s", first.output), first.output
    wait_for(lambda: _ready(first), timeout_s=90, what="/readyz 200 after the API restart", dev=first)
    assert first.pids()["api"] != pids["api"]
    assert first.stop(signal.SIGTERM) == 0, first.output
    wait_for(lambda: _all_gone(first.pids()), timeout_s=15, what="every child gone", dev=first)

    # A restart on the same data folder reuses the admin and agent, and the admin can still log in.
    second = DevProcess(tmp_data_dir, free_port(), "--workers", "0", "--no-scheduler")
    dev_processes.append(second)
    wait_for(lambda: _ready(second), timeout_s=90, what="/readyz 200 after restart", dev=second)
    assert "(reused)" in second.output
    assert _login(second)
    assert second.stop(signal.SIGTERM) == 0, second.output


def test_rotating_or_deleting_the_dev_agent_restarts_the_worker_and_keeps_the_api(
    tmp_data_dir: Path, dev_processes: list[DevProcess]
) -> None:
    _needs_module("worker.__main__")
    dev = DevProcess(tmp_data_dir, free_port(), "--no-scheduler")
    dev_processes.append(dev)
    wait_for(lambda: _ready(dev), timeout_s=90, what="/readyz 200", dev=dev)
    headers = {"Authorization": f"Bearer {_login(dev)}"}

    def dev_agent() -> dict[str, str]:
        agent: dict[str, str] = json.loads((tmp_data_dir / "dev.json").read_text())["agent"]
        return agent

    def online(agent_id: str) -> bool:
        response = httpx.get(f"{dev.base_url}/api/agents/{agent_id}", headers=headers, timeout=5)
        return response.status_code == 200 and bool(response.json()["online"])

    # The API must answer all along: a thread samples /healthz while the worker goes and comes back.
    failures: list[str] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            try:
                status = httpx.get(f"{dev.base_url}/healthz", timeout=5).status_code
                if status != 200:
                    failures.append(f"healthz {status}")
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        first = dev_agent()
        wait_for(lambda: online(first["id"]), timeout_s=60, what="the dev agent online", dev=dev)
        worker_pid = dev.pids()["worker-1"]

        rotated = httpx.post(f"{dev.base_url}/api/agents/{first['id']}/rotate-token", headers=headers, timeout=10)
        assert rotated.status_code == 200, rotated.text
        wait_for(lambda: dev.pids()["worker-1"] != worker_pid, timeout_s=90, what="the worker restarted", dev=dev)
        assert re.search(r"worker-1 \(pid \d+\) exited with code -?\d+; restarting it in \d+ s", dev.output)
        assert "has a new token" in dev.output
        second = dev_agent()
        assert second["id"] == first["id"]
        assert second["token"] not in (first["token"], rotated.json()["token"])
        wait_for(lambda: online(second["id"]), timeout_s=60, what="the dev agent online again", dev=dev)

        worker_pid = dev.pids()["worker-1"]
        deleted = httpx.delete(f"{dev.base_url}/api/agents/{second['id']}", headers=headers, timeout=10)
        assert deleted.status_code == 204, deleted.text
        wait_for(lambda: dev_agent()["id"] != second["id"], timeout_s=90, what="a new dev agent", dev=dev)
        wait_for(lambda: online(dev_agent()["id"]), timeout_s=60, what="the new dev agent online", dev=dev)
        assert dev.pids()["worker-1"] != worker_pid
        assert "the dev agent is gone" in dev.output
    finally:
        sampling.set()
        sampler.join(timeout=10)
    assert dev.process.poll() is None, dev.output
    assert failures == [], failures
    assert dev.stop(signal.SIGINT) == 0, dev.output


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
def test_killing_the_supervisor_takes_the_children_down(tmp_data_dir: Path, dev_processes: list[DevProcess]) -> None:
    dev = DevProcess(tmp_data_dir, free_port(), "--workers", "0", "--no-scheduler")
    dev_processes.append(dev)
    wait_for(lambda: _ready(dev), timeout_s=90, what="/readyz 200", dev=dev)
    pids = dev.pids()
    assert {"api", "redis"} <= set(pids), dev.output
    dev.process.kill()  # no teardown runs: only the kernel's parent-death signal can stop the children
    dev.process.wait(timeout=30)
    deadline = time.monotonic() + 30
    while not _all_gone(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _all_gone(pids), f"children left behind: {pids}"


@pytest.mark.postgres
def test_dev_uses_the_given_redis_and_database(
    tmp_data_dir: Path, dev_processes: list[DevProcess], redis_url: str, redis_prefix: str, postgres_admin_url: str
) -> None:
    import secrets

    from tests.conftest import create_postgres_database, drop_postgres_database

    name = f"taskyard_test_dev_{secrets.token_hex(5)}"
    url = create_postgres_database(postgres_admin_url, name)
    try:
        # The plain `postgresql://` spelling people paste; dev turns it into the async driver's URL.
        plain_url = url.replace("postgresql+psycopg://", "postgresql://")
        dev = DevProcess(
            tmp_data_dir,
            free_port(),
            "--workers",
            "0",
            "--no-scheduler",
            env_extra={"REDIS_URL": redis_url, "DATABASE_URL": plain_url, "TASKYARD_REDIS_PREFIX": redis_prefix},
        )
        dev_processes.append(dev)
        wait_for(lambda: _ready(dev), timeout_s=90, what="/readyz 200", dev=dev)
        assert "embedded redis-server" not in dev.output
        assert f"database: postgresql+psycopg://postgres@127.0.0.1:5432/{name}" in dev.output
        assert _login(dev)
        assert dev.stop() == 0, dev.output
    finally:
        drop_postgres_database(postgres_admin_url, name)
