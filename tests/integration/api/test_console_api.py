"""The console's HTTP side through the real app: pages and assets with their CSP, and `/api/admin/queues`."""

from __future__ import annotations

import pytest

from tests.integration.api.test_tasks_support import (  # noqa: F401 - fixtures, used by name
    Env,
    assert_error,
    env_fixture,
    make_env_fixture,
    sched_fixture,
    sched_service_fixture,
    sched_settings_fixture,
    sessionmaker_fixture,
)

pytestmark = pytest.mark.redis


def test_root_redirects_to_the_console_and_pages_carry_a_strict_csp(env: Env) -> None:
    root = env.client.get("/", follow_redirects=False)
    assert root.status_code == 302
    assert root.headers["location"] == "/console"
    page = env.client.get("/console")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    # Self only: no other origin, no data: or blob: sources anywhere.
    sources = {src for directive in csp.split(";") for src in directive.split()[1:]}
    assert sources <= {"'self'", "'none'"}
    assert page.headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="/console/static/app.js">' in page.text
    script = env.client.get("/console/static/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert env.client.get("/console/static/style.css").headers["content-type"].startswith("text/css")


@pytest.mark.parametrize("name", ["nope.js", "controller.py", "..%2Fcontroller.py", "index.html", "x" * 65])
def test_unknown_or_unlisted_assets_are_a_clean_4xx(env: Env, name: str) -> None:
    response = env.client.get(f"/console/static/{name}")
    assert 400 <= response.status_code < 500
    body = response.json()
    assert set(body) >= {"error", "message", "code", "requestId"}


def test_console_pages_are_not_in_the_openapi_document_but_the_queues_endpoint_is(env: Env) -> None:
    paths = env.client.get("/schema/openapi.json").json()["paths"]
    assert "/api/admin/queues" in paths
    assert not any(p.startswith("/console") for p in paths)
    assert "/" not in paths


def test_queue_stats_need_an_admin(env: Env) -> None:
    assert_error(env.client.get("/api/admin/queues"), 401, "unauthorized")
    user = env.user()
    assert_error(env.client.get("/api/admin/queues", headers=user.headers), 403, "forbidden")
    admin = env.user(admin=True)
    for bad in ("0", "61", "x"):
        response = env.client.get(f"/api/admin/queues?minutes={bad}", headers=admin.headers)
        assert response.status_code in (400, 422), response.text


def test_queue_stats_count_depth_per_priority_and_route_age_and_throughput(env: Env) -> None:
    admin = env.user(admin=True)
    user = env.user()
    for priority in (1, 1, 7):
        env.submit(user, {"type": "echo", "priority": priority, "capabilities": ["gpu"]})
    env.submit(user, {"type": "echo", "priority": 9, "capabilities": ["cpu", "big"]})
    gone = env.submit(user, {"type": "echo", "priority": 3, "capabilities": ["gpu"]})

    def ended(kind: str) -> int:
        # The database is shared by the whole test session: compare before and after, over a wide window.
        stats = env.client.get("/api/admin/queues?minutes=60", headers=admin.headers).json()
        return sum(m[kind] for m in stats["throughput"])

    before = {kind: ended(kind) for kind in ("done", "failed", "canceled")}
    assert env.client.post(f"/api/tasks/{gone['id']}/cancel", headers=user.headers).status_code == 200
    assert {kind: ended(kind) - before[kind] for kind in before} == {"done": 0, "failed": 0, "canceled": 1}

    response = env.client.get("/api/admin/queues?minutes=5", headers=admin.headers)
    assert response.status_code == 200, response.text
    stats = response.json()
    assert stats["depth"] == 4
    assert stats["byPriority"] == {"0": 0, "1": 2, "2": 0, "3": 0, "4": 0, "5": 0, "6": 0, "7": 1, "8": 0, "9": 1}
    routes = {tuple(r["capabilities"]): r for r in stats["routes"]}
    gpu = routes[("gpu",)]
    assert gpu["depth"] == 3
    assert gpu["byPriority"] == {"1": 2, "7": 1}
    assert gpu["pinnedAgentId"] is None
    assert gpu["oldestAgeS"] is not None
    assert gpu["oldestAgeS"] >= 0
    assert routes[("big", "cpu")]["depth"] == 1
    assert stats["routes"][0]["depth"] == 3  # deepest first
    assert len(stats["throughput"]) == 5
    starts = [m["start"] for m in stats["throughput"]]
    assert starts == sorted(starts)
    assert sum(m["canceled"] for m in stats["throughput"][-2:]) >= 1  # the cancel, this minute or the last
