"""`/api/webhook` over REST: SSRF refusals at save time, the secret shown once, rotation, the owner's log only."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.api.test_tasks_support import (  # noqa: F401 - fixtures, used by name
    Env,
    assert_error,
    make_env_fixture,
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
