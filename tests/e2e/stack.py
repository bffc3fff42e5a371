"""A whole taskyard stack in real processes for end-to-end tests.

Each test gets its own redis-server (so it can be killed or emptied), its own database, and real
`api`, `scheduler` and `worker` processes speaking real HTTP and WebSocket on loopback ports.
Intervals follow the test profile of RELIABILITY.md §3, so faults resolve in seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from taskyard.embedded import EmbeddedRedis, find_free_port

HEARTBEAT_INTERVAL_S = 0.5
HEARTBEAT_TIMEOUT_S = 2.0
SWEEP_INTERVAL_S = 0.25
RECONNECT_GRACE_S = 1.0
RECOVERY_BOUND_S = HEARTBEAT_TIMEOUT_S + SWEEP_INTERVAL_S + 5.0
JWT_SECRET = "e2e-secret-" + "y" * 48
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin-password-123"


def wait_until(predicate: Callable[[], Any], *, timeout_s: float, interval_s: float = 0.05, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy; fail the test with `what` on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")
        time.sleep(interval_s)


@dataclass
class Proc:
    """One child process of the stack and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Stack:
    """Processes and clients of one end-to-end test. Use `stop()` (the fixture does) to tear down."""

    workdir: Path
    database_url: str
    extra_env: dict[str, str] = field(default_factory=dict)
    prefix: str = "e2e"
    redis: EmbeddedRedis | None = None
    procs: list[Proc] = field(default_factory=list)
    api_url: str = ""
    _admin_token: str = ""

    # ----------------------------------------------------------------------------- services

    def start_redis(self, port: int | None = None) -> str:
        # Prefer the system redis-server (7.x in CI); the embedded 6.2 one works too.
        from taskyard.embedded import redis_server_binary

        self.redis = EmbeddedRedis(port=port, binary=redis_server_binary(prefer_path=True))
        return self.redis.start()

    def restart_redis_empty(self, down_s: float = 0.0) -> None:
        """kill -9 the Redis server and start an empty one on the same port (no persistence)."""
        if self.redis is None or self.redis.pid is None:
            raise RuntimeError("redis is not running")
        port = self.redis.port
        os.kill(self.redis.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.redis.stop()
        time.sleep(down_s)
        self.start_redis(port=port)

    @property
    def redis_url(self) -> str:
        if self.redis is None:
            raise RuntimeError("redis is not started")
        return self.redis.url

    def env(self, **overrides: str) -> dict[str, str]:
        environ = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", str(self.workdir)),
            "PYTHONUNBUFFERED": "1",
            "APP_ENV": "dev",
            "JWT_SECRET": JWT_SECRET,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "TASKYARD_REDIS_PREFIX": self.prefix,
            "TASKYARD_DATA_DIR": str(self.workdir / "data"),
            "TASKYARD_API_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_INTERVAL_S),
            "TASKYARD_API_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
            "TASKYARD_API_RECONNECT_GRACE_S": str(RECONNECT_GRACE_S),
            "TASKYARD_API_RECONCILE_INTERVAL_S": "0.5",
            "TASKYARD_SCHEDULER_SWEEP_INTERVAL_S": str(SWEEP_INTERVAL_S),
            "TASKYARD_SCHEDULER_ASSIGN_TIMEOUT_S": "3",
            "TASKYARD_SCHEDULER_RETRY_BASE_S": "0.2",
            "TASKYARD_SCHEDULER_RETRY_MAX_S": "1",
            "TASKYARD_WORKER_DRAIN_TIMEOUT_S": "3",
        }
        environ.update(self.extra_env)
        environ.update(overrides)
        return environ

    # ----------------------------------------------------------------------------- processes

    def spawn(self, name: str, argv: list[str], **env: str) -> Proc:
        log_path = self.workdir / f"{name}-{len(self.procs)}.log"
        log_file = log_path.open("wb")
        popen = subprocess.Popen(
            argv,
            cwd=str(Path(__file__).resolve().parents[2]),
            env=self.env(**env),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def migrate(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "taskyard", "migrate"],
            env=self.env(),
            capture_output=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"migrate failed: {result.stdout.decode()} {result.stderr.decode()}")

    def start_api(self, name: str = "api", port: int | None = None, **env: str) -> str:
        port = port or find_free_port()
        argv = [sys.executable, "-m", "taskyard", "api", "--host", "127.0.0.1", "--port", str(port)]
        proc = self.spawn(name, argv, **env)
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if not proc.alive():
                raise AssertionError(f"{name} exited: {proc.log()[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
            return False

        wait_until(ready, timeout_s=30, what=f"{name} /readyz")
        if not self.api_url:
            self.api_url = url
        return url

    def start_scheduler(self, name: str = "scheduler") -> Proc:
        return self.spawn(name, [sys.executable, "-m", "scheduler"])

    def start_worker(
        self,
        agent_id: str,
        token: str,
        *,
        concurrency: int | None = 4,
        name: str = "worker",
        api_url: str | None = None,
        **env: str,
    ) -> Proc:
        ws_url = (api_url or self.api_url).replace("http://", "ws://") + "/ws"
        return self.spawn(
            name,
            [sys.executable, "-m", "worker", "--enable-crash-handler"],
            TASKYARD_WORKER_URL=ws_url,
            TASKYARD_WORKER_AGENT_ID=agent_id,
            TASKYARD_WORKER_AGENT_TOKEN=token,
            TASKYARD_WORKER_CONCURRENCY="" if concurrency is None else str(concurrency),  # blank: unset
            **env,
        )

    def kill(self, proc: Proc, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=15)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.alive():
                self.kill(proc, signal.SIGTERM)
            if proc.alive():
                self.kill(proc, signal.SIGKILL)
        if self.redis is not None:
            self.redis.stop()

    def logs(self) -> str:
        return "\n".join(f"===== {p.name} ({p.log_path.name})\n{p.log()[-6000:]}" for p in self.procs)

    # ----------------------------------------------------------------------------- REST

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.api_url, headers=headers, timeout=30)

    def create_admin(self) -> str:
        if self._admin_token:
            return self._admin_token
        result = subprocess.run(
            [sys.executable, "-m", "taskyard", "create-admin", "--email", ADMIN_EMAIL, "--password", ADMIN_PASSWORD],
            env=self.env(),
            capture_output=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"create-admin failed: {result.stdout.decode()} {result.stderr.decode()}")
        self._admin_token = self.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        return self._admin_token

    def login(self, email: str, password: str) -> str:
        with self.http() as client:
            response = client.post("/api/auth/login", json={"email": email, "password": password})
            response.raise_for_status()
            return str(response.json()["accessToken"])

    def register_user(self, email: str, password: str = "user-password-123") -> str:
        with self.http() as client:
            response = client.post("/api/auth/register", json={"email": email, "password": password, "name": email})
            response.raise_for_status()
        return self.login(email, password)

    def create_agent(
        self,
        *,
        capabilities: list[str] | None = None,
        concurrency: int = 4,
        name: str = "agent",
        is_public: bool = True,
    ) -> tuple[str, str]:
        with self.http(self.create_admin()) as client:
            response = client.post(
                "/api/agents",
                json={
                    "name": name,
                    "type": "worker",
                    "capabilities": capabilities or [],
                    "concurrency": concurrency,
                    "isPublic": is_public,
                },
            )
            response.raise_for_status()
            body = response.json()
            return str(body["id"]), str(body["token"])

    def submit(self, token: str, **task: Any) -> dict[str, Any]:
        with self.http(token) as client:
            response = client.post("/api/tasks", json=task)
            response.raise_for_status()
            return dict(response.json())

    def submit_batch(self, token: str, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        created: list[dict[str, Any]] = []
        with self.http(token) as client:
            for start in range(0, len(tasks), 500):
                response = client.post("/api/tasks/batch", json={"tasks": tasks[start : start + 500]})
                response.raise_for_status()
                body = response.json()
                created.extend(body["items"] if isinstance(body, dict) else body)
        return created

    def task(self, token: str, task_id: str) -> dict[str, Any]:
        with self.http(token) as client:
            response = client.get(f"/api/tasks/{task_id}")
            response.raise_for_status()
            return dict(response.json())

    def tasks(self, token: str, **params: Any) -> Iterator[dict[str, Any]]:
        page = 1
        with self.http(token) as client:
            while True:
                response = client.get("/api/tasks", params={**params, "page": page, "pageSize": 100})
                response.raise_for_status()
                body = response.json()
                yield from body["items"]
                if page * 100 >= body["total"]:
                    return
                page += 1

    def count_by_status(self, token: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.tasks(token):
            counts[item["status"]] = counts.get(item["status"], 0) + 1
        return counts
