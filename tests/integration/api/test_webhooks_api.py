"""`/api/webhook` over REST: SSRF refusals at save time, the secret shown once, rotation, the owner's log only."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.api.test_tasks_support import (  # noqa: F401 - fixtures, used by name
    Env,
    assert_error,
    make_env_fixture,
    sessionmaker_fixture,
)

pytestmark = pytest.mark.redis


@pytest.fixture(name="env")
def env_fixture(make_env: Any) -> Env:
    env: Env = make_env(TASKYARD_API_WEBHOOK_ALLOWLIST="127.0.0.1:9")
    return env


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",  # loopback, not allow-listed (only port 9 is)
        "http://10.0.0.5/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost/hook",
        "http://2130706433/hook",
        "http://[::1]/hook",
        "ftp://example.com/hook",
        "http://user@example.com/hook",
        "https://example.com/hook?x=1",
    ],
)
def test_private_or_odd_targets_are_refused(env: Env, url: str) -> None:
    user = env.user()
    body = assert_error(
        env.client.put("/api/webhook", json={"url": url}, headers=user.headers), 422, "validation_error"
    )
    assert body["details"]["field"] == "url"


def test_secret_is_shown_once_and_rotates(env: Env) -> None:
    user = env.user()
    other = env.user()
    url = "http://127.0.0.1:9/hook"
    assert_error(env.client.get("/api/webhook", headers=user.headers), 404, "not_found")
    first = env.client.put("/api/webhook", json={"url": url}, headers=user.headers)
    assert first.status_code == 201, first.text
    secret = first.json()["secret"]
    assert secret.startswith("whsec_")
    assert len(secret) > 40

    again = env.client.put("/api/webhook", json={"url": url, "active": False}, headers=user.headers)
    assert again.status_code == 200
    assert "secret" not in again.json()
    assert again.json()["active"] is False
    rotated = env.client.put("/api/webhook", json={"url": url, "rotateSecret": True}, headers=user.headers).json()
    assert rotated["secret"] != secret

    stored = env.rows("SELECT secret_enc FROM webhooks WHERE user_id = :u", u=user.id)[0][0]
    assert rotated["secret"].encode() not in bytes(stored)  # encrypted at rest

    assert_error(env.client.get("/api/webhook", headers=other.headers), 404, "not_found")
    assert env.client.get("/api/webhook/deliveries", headers=other.headers).json()["total"] == 0
    long_url = {"url": "http://127.0.0.1:9/" + "a" * 3000}
    assert_error(env.client.put("/api/webhook", json=long_url, headers=user.headers), 422, "validation_error")
    assert env.client.delete("/api/webhook", headers=user.headers).status_code == 204
    assert_error(env.client.delete("/api/webhook", headers=user.headers), 404, "not_found")


async def test_a_task_callback_url_is_called_instead_of_the_owner_url(
    make_env: Any, redis_client: Any, sessionmaker: Any
) -> None:
    import datetime as dt
    import hashlib
    import hmac
    import http.server
    import json
    import threading

    from api.db.base import utcnow
    from api.webhooks.delivery import collect, deliver, mark_key
    from tests.conftest import free_port

    port = free_port()
    calls: list[tuple[dict[str, str], bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env: Env = make_env(TASKYARD_API_WEBHOOK_ALLOWLIST=f"127.0.0.1:{port}")
        user = env.user()
        # No URL of its own: the webhook only holds the signing secret.
        secret = env.client.put("/api/webhook", json={}, headers=user.headers).json()["secret"]
        await collect(sessionmaker, redis_client, env.prefix, now=utcnow() - dt.timedelta(seconds=5))  # watermark

        with_callback = env.submit(
            user, {"type": "echo", "capabilities": ["nobody"], "callbackUrl": f"http://127.0.0.1:{port}/cb"}
        )
        without = env.submit(user, {"type": "echo", "capabilities": ["nobody"]})
        bad = {"type": "echo", "callbackUrl": "file:///etc/passwd"}
        assert_error(env.client.post("/api/tasks", json=bad, headers=user.headers), 422, "validation_error")
        for task in (with_callback, without):
            assert env.client.post(f"/api/tasks/{task['id']}/cancel", headers=user.headers).status_code == 200

        ids = await collect(sessionmaker, redis_client, env.prefix, now=utcnow() + dt.timedelta(seconds=5))
        assert len(ids) == 1
        assert await collect(sessionmaker, redis_client, env.prefix, now=utcnow() + dt.timedelta(seconds=6)) == []
        settings = env.client.app.state.settings
        assert await deliver(sessionmaker, settings, ids[0], last_attempt=False) == "delivered"
        [(headers, body)] = calls
        assert headers["x-taskyard-delivery"] == ids[0]
        assert json.loads(body)["task"]["id"] == with_callback["id"]
        signed = f"{headers['x-taskyard-timestamp']}.".encode() + body
        assert headers["x-taskyard-signature"] == "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        # Delivered once: a repeated job (rq retry after a crash) does not call again.
        assert await deliver(sessionmaker, settings, ids[0], last_attempt=False) == "delivered"
        assert len(calls) == 1

        # A pending delivery whose job was lost is handed out again by a later scan (and only then).
        env.client.put("/api/webhook", json={"url": f"http://127.0.0.1:{port}/user"}, headers=user.headers)
        # (The scans above ran with future clocks; put the watermark back to the present.)
        await redis_client.set(mark_key(env.prefix), (utcnow() - dt.timedelta(seconds=5)).isoformat())
        lost = env.submit(user, {"type": "echo", "capabilities": ["nobody"]})
        env.client.post(f"/api/tasks/{lost['id']}/cancel", headers=user.headers)
        fresh = await collect(sessionmaker, redis_client, env.prefix, now=utcnow() + dt.timedelta(seconds=7))
        [(lost_id,)] = env.rows("SELECT id FROM webhook_deliveries WHERE task_id = :t", t=lost["id"])
        assert lost_id in fresh  # (the earlier task without a callback qualifies too, now that the user has a URL)
        assert await collect(sessionmaker, redis_client, env.prefix, now=utcnow() + dt.timedelta(seconds=8)) == []
        later = utcnow() + dt.timedelta(minutes=11)
        assert lost_id in await collect(sessionmaker, redis_client, env.prefix, now=later)
        assert await deliver(sessionmaker, settings, lost_id, last_attempt=False) == "delivered"
        assert lost_id not in await collect(sessionmaker, redis_client, env.prefix, now=later)

        # Redis loses the watermark: it is recovered from the database, so a task finished meanwhile is still
        # called back for, and the rescan makes no second delivery for the ones already made.
        await redis_client.set(mark_key(env.prefix), (utcnow() - dt.timedelta(seconds=5)).isoformat())
        assert await collect(sessionmaker, redis_client, env.prefix, now=utcnow()) == []
        await redis_client.delete(mark_key(env.prefix))
        gap = env.submit(user, {"type": "echo", "capabilities": ["nobody"]})
        env.client.post(f"/api/tasks/{gap['id']}/cancel", headers=user.headers)
        recovered = await collect(sessionmaker, redis_client, env.prefix, now=utcnow() + dt.timedelta(seconds=9))
        [(gap_id,)] = env.rows("SELECT id FROM webhook_deliveries WHERE task_id = :t", t=gap["id"])
        assert recovered == [gap_id]
        assert env.rows("SELECT count(*) FROM webhook_deliveries WHERE task_id = :t", t=lost["id"]) == [(1,)]
    finally:
        server.shutdown()
        server.server_close()
