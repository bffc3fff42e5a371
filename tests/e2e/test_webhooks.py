"""Webhooks end to end: the jobs process delivers a signed POST to a receiver in this test, retries after a 500,
and refuses a private address that the operator did not allow."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.e2e.stack import Stack, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.timeout(240)]


@dataclass
class Receiver:
    port: int
    codes: list[int]
    """Status codes to answer with, in order; the last one repeats."""
    calls: list[tuple[dict[str, str], bytes, float]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(free_port(), [500, 200])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            state.calls.append(({k.lower(): v for k, v in self.headers.items()}, body, time.time()))
            code = state.codes[min(len(state.calls) - 1, len(state.codes) - 1)]
            self.send_response(code)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", state.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def _verify(secret: str, headers: dict[str, str], body: bytes) -> None:
    timestamp = int(headers["x-taskyard-timestamp"])
    assert abs(time.time() - timestamp) < 120  # a receiver refuses stale timestamps (replay)
    expected = "v1=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-taskyard-signature"], expected)


def test_a_finished_task_is_delivered_signed_and_retried_after_a_500(stack: Stack, receiver: Receiver) -> None:
    refused_port = free_port()
    # The API accepts both targets; the jobs process only allows the receiver's port.
    api = stack.start_api(
        name="api-hooks", TASKYARD_API_WEBHOOK_ALLOWLIST=f"127.0.0.1:{receiver.port},127.0.0.1:{refused_port}"
    )
    jobs = stack.spawn(
        "jobs",
        [sys.executable, "-m", "api.jobs"],
        TASKYARD_API_WEBHOOKS_TICK_S="1",
        TASKYARD_API_WEBHOOK_ALLOWLIST=f"127.0.0.1:{receiver.port}",
    )
    token = stack.register_user("hooks@example.com")
    headers = {"Authorization": f"Bearer {token}"}

    created = httpx.put(f"{api}/api/webhook", json={"url": receiver.url}, headers=headers, timeout=10)
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    assert httpx.get(f"{api}/api/webhook", headers=headers, timeout=10).json().get("secret") is None
    time.sleep(3)  # let the first scan set its watermark before the task finishes

    task = stack.submit(token, type="echo", input={"n": 7}, capabilities=["nobody-has-this"])
    canceled = httpx.post(f"{api}/api/tasks/{task['id']}/cancel", headers=headers, timeout=10)
    assert canceled.status_code == 200, canceled.text

    def delivered() -> bool:
        assert jobs.alive(), jobs.log()[-4000:]
        return len(receiver.calls) >= 2

    wait_until(delivered, timeout_s=90, what="a failed attempt and a retry")
    (h1, b1, t1), (h2, b2, t2) = receiver.calls[:2]
    for h, b in ((h1, b1), (h2, b2)):
        _verify(secret, h, b)
        payload = json.loads(b)
        assert payload["event"] == "task.finished"
        assert payload["task"]["id"] == task["id"]
        assert payload["task"]["status"] == "canceled"
    assert h1["x-taskyard-delivery"] == h2["x-taskyard-delivery"]
    assert t2 - t1 >= 5  # rq's backoff, not an immediate repeat

    def log_says_delivered() -> dict[str, Any] | None:
        items = httpx.get(f"{api}/api/webhook/deliveries", headers=headers, timeout=10).json()["items"]
        mine = [i for i in items if i["taskId"] == task["id"]]
        return mine[0] if mine and mine[0]["status"] == "delivered" else None

    entry = wait_until(log_says_delivered, timeout_s=30, what="the delivery log")
    assert entry["attempts"] == 2
    assert entry["lastStatusCode"] == 200

    # A private target the jobs process does not allow: refused at delivery, never called.
    other = stack.register_user("hooks-refused@example.com")
    other_headers = {"Authorization": f"Bearer {other}"}
    target = f"http://127.0.0.1:{refused_port}/hook"
    assert httpx.put(f"{api}/api/webhook", json={"url": target}, headers=other_headers, timeout=10).status_code == 201
    time.sleep(3)
    second = stack.submit(other, type="echo", capabilities=["nobody-has-this"])
    httpx.post(f"{api}/api/tasks/{second['id']}/cancel", headers=other_headers, timeout=10)

    def refused() -> dict[str, Any] | None:
        items = httpx.get(f"{api}/api/webhook/deliveries", headers=other_headers, timeout=10).json()["items"]
        return items[0] if items and items[0]["status"] == "refused" else None

    entry = wait_until(refused, timeout_s=60, what="a refused delivery")
    assert "private" in entry["lastError"] or "loopback" in entry["lastError"]
    assert entry["attempts"] == 0
    stack.kill(jobs, signal.SIGTERM)
