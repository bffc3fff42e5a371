"""A keyless `POST /api/tasks` skips the Redis revocation check for `auth.revocation_check_interval_s` after
one: two app instances (replicas) on one Redis and database show a logout, a session's revocation and a
user disable taking effect at once on the replica that handles them and within the interval on the other,
and the submit rate limit holding across both."""

from __future__ import annotations

import time
from typing import Any

import pytest

from api.ratelimit import lease_max
from tests.integration.api.test_tasks_support import (  # noqa: F401 - fixtures, used by name
    PASSWORD,
    assert_error,
    make_env_fixture,
)

pytestmark = pytest.mark.redis

INTERVAL_S = 0.3
_TASK = {"type": "echo"}


def _replicas(make_env: Any, **overrides: Any) -> tuple[Any, Any]:
    settings = {"TASKYARD_API_REVOCATION_CHECK_INTERVAL_S": INTERVAL_S, **overrides}
    return make_env(**settings), make_env(**settings)


def _past_the_interval() -> None:
    time.sleep(INTERVAL_S + 0.2)


def test_a_logout_stops_submits_at_once_here_and_within_the_interval_elsewhere(make_env: Any) -> None:
    a, b = _replicas(make_env)
    user = a.user()
    for env in (a, b, a, b):  # both replicas have checked the token and hold a lease
        assert env.client.post("/api/tasks", json=_TASK, headers=user.headers).status_code == 201
    assert a.client.post("/api/auth/logout", headers=user.headers).status_code == 200
    assert_error(a.client.post("/api/tasks", json=_TASK, headers=user.headers), 401, "unauthorized")
    _past_the_interval()
    for env in (a, b):
        assert_error(env.client.post("/api/tasks", json=_TASK, headers=user.headers), 401, "unauthorized")


def test_a_revoked_session_and_a_disabled_user_stop_submits_within_the_interval(make_env: Any) -> None:
    a, b = _replicas(make_env)
    admin = a.user(admin=True)
    kept, disabled = a.user(), a.user()
    # A second session of `kept`: a logout with its refresh token revokes its family, so this token too.
    login = a.client.post("/api/auth/login", json={"email": kept.email, "password": PASSWORD})
    other = {"Authorization": f"Bearer {login.json()['accessToken']}"}
    for env in (a, b):
        for headers in (kept.headers, other, disabled.headers):
            assert env.client.post("/api/tasks", json=_TASK, headers=headers).status_code == 201
    refresh = login.json()["refreshToken"]
    r = a.client.post("/api/auth/logout", headers=other, json={"refreshToken": refresh})
    assert r.status_code == 200, r.text
    r = a.client.post(f"/api/admin/users/{disabled.id}/disable", headers=admin.headers)
    assert r.status_code == 200, r.text
    _past_the_interval()
    for env in (a, b):
        assert_error(env.client.post("/api/tasks", json=_TASK, headers=other), 401, "unauthorized")
        assert_error(env.client.post("/api/tasks", json=_TASK, headers=disabled.headers), 401, "unauthorized")
        assert env.client.post("/api/tasks", json=_TASK, headers=kept.headers).status_code == 201


def test_interval_zero_checks_redis_on_every_submit(make_env: Any) -> None:
    a, b = _replicas(make_env, TASKYARD_API_REVOCATION_CHECK_INTERVAL_S=0)
    user = a.user()
    for env in (a, b, a, b):
        assert env.client.post("/api/tasks", json=_TASK, headers=user.headers).status_code == 201
    assert a.client.post("/api/auth/logout", headers=user.headers).status_code == 200
    assert_error(b.client.post("/api/tasks", json=_TASK, headers=user.headers), 401, "unauthorized")


def test_the_submit_limit_holds_across_replicas(make_env: Any) -> None:
    limit = 60
    a, b = _replicas(make_env, TASKYARD_API_TASK_SUBMIT_PER_USER=limit)
    user = a.user()
    statuses = [(a if i % 2 else b).client.post("/api/tasks", json=_TASK, headers=user.headers) for i in range(90)]
    created = sum(r.status_code == 201 for r in statuses)
    # Never past the limit; short of it by at most the hits the other replica reserved and did not use.
    assert limit - lease_max(limit) <= created <= limit
    assert a.count_tasks(user.id) == created
    refused = [r for r in statuses if r.status_code != 201]
    assert refused
    for r in refused:
        assert_error(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) >= 1
