"""Helpers of the LLM end-to-end tests: the fake LLM server as a process, a watching client on a thread."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from protocol.envelope import encode_frame
from protocol.messages import Subscribe
from tests.e2e.stack import Proc, Stack, wait_until


class FakeLlm:
    """`python -m tests.fakellm` started by the stack (stopped with it); scripted over HTTP."""

    def __init__(self, stack: Stack) -> None:
        log = stack.workdir / "fakellm.log"
        with log.open("wb") as log_file:
            popen = subprocess.Popen(
                [sys.executable, "-m", "tests.fakellm", "--port", "0"],
                cwd=str(Path(__file__).resolve().parents[2]),
                stdout=subprocess.PIPE,
                stderr=log_file,
                start_new_session=True,
            )
        assert popen.stdout is not None
        line = popen.stdout.readline().decode()
        if not line.startswith("listening on "):
            raise RuntimeError(f"fake LLM did not start: {line!r}")
        popen.stdout.close()  # it prints nothing more
        self.port = int(line.split()[-1])
        stack.procs.append(Proc("fakellm", popen, log))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def worker_env(self, model: str = "default-model") -> dict[str, str]:
        return {
            "TASKYARD_WORKER_LLM_BASE_URL": self.base_url,
            "TASKYARD_WORKER_LLM_MODEL": model,
            "TASKYARD_WORKER_LLM_API_KEY": "sk-e2e",
            "TASKYARD_WORKER_LLM_ALLOWED_NETWORKS": "127.0.0.0/8",
        }

    def _http(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def script(self, model: str, *steps: dict[str, Any]) -> None:
        with self._http() as http:
            http.post("/_script", json={"model": model, "steps": list(steps)}).raise_for_status()

    def calls(self, model: str) -> list[dict[str, Any]]:
        with self._http() as http:
            return [r for r in http.get("/_requests").json() if r["model"] == model]


class Watcher:
    """A client socket subscribed to one task, collecting its events on a thread."""

    def __init__(self, stack: Stack, token: str, task_id: str) -> None:
        url = stack.api_url.replace("http://", "ws://") + "/ws?role=client"
        headers = {"Authorization": f"Bearer {token}"}
        self._conn: ClientConnection = connect(url, additional_headers=headers, legacy=True)
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        json.loads(self._conn.recv(timeout=10))  # auth/ok
        self._conn.send(encode_frame(Subscribe(task_id=task_id, last_seq=0)).decode())
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for raw in self._conn:
                frame = json.loads(raw)
                if frame["type"] in ("task/status", "task/stream", "task/progress"):
                    with self._lock:
                        self.events.append({"type": frame["type"], **frame["payload"]})
        except ConnectionClosed:
            return

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return sorted({e["seq"]: e for e in self.events}.values(), key=lambda e: e["seq"])

    def pieces(self) -> list[dict[str, Any]]:
        return [e for e in self.snapshot() if e["type"] == "task/stream"]

    def wait_status(self, status: str, timeout_s: float = 30) -> None:
        wait_until(lambda: any(e.get("status") == status for e in self.snapshot()), timeout_s=timeout_s, what=status)

    def close(self) -> None:
        self._conn.close()
        self._thread.join(timeout=5)


def wait_task(stack: Stack, token: str, task_id: str, *statuses: str, timeout_s: float = 40) -> dict[str, Any]:
    """Poll REST until the task is in one of `statuses`; returns its view (with events)."""
    found: dict[str, Any] = {}

    def done() -> bool:
        found.update(stack.task(token, task_id))
        return found["status"] in statuses

    wait_until(done, timeout_s=timeout_s, what=f"task {task_id} {statuses}")
    return found


def since(start: float) -> float:
    return time.monotonic() - start
