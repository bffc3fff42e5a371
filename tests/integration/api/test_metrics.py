"""`GET /metrics`: Prometheus text with queue depth, tasks by status, agents, dispatch latency, sockets."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from scheduler.types import AgentSpec
from tests.integration.api.test_tasks_support import (  # noqa: F401 - fixtures, used by name
    Env,
    env_fixture,
    make_env_fixture,
    sched_fixture,
    sched_service_fixture,
    sched_settings_fixture,
    sessionmaker_fixture,
)

pytestmark = pytest.mark.redis


def scrape(env: Env) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    r = env.client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


async def test_metrics_expose_the_series(env: Env, sched) -> None:
    user = env.user()
    for priority in (2, 2, 7):
        env.submit(user, {"type": "echo", "priority": priority, "capabilities": ["nobody-has-this"]})
    canceled = env.submit(user, {"type": "echo", "capabilities": ["nobody-has-this"]})
    assert env.client.post(f"/api/tasks/{canceled['id']}/cancel", headers=user.headers).status_code == 200
    await sched.agent_online(AgentSpec("agent-" + uuid.uuid4().hex[:6], user.id, ("x",), 3), lease_s=30)

    m = scrape(env)
    assert m["taskyard_queue_depth"][(("priority", "2"),)] == 2
    assert m["taskyard_queue_depth"][(("priority", "7"),)] == 1
    assert m["taskyard_queue_depth"][(("priority", "0"),)] == 0
    assert m["taskyard_tasks"][(("status", "queued"),)] >= 3
    assert (("status", "done"),) in m["taskyard_tasks"]
    assert m["taskyard_agents_online"][()] == 1
    assert m["taskyard_agent_slots_total"][()] == 3
    assert "taskyard_dispatch_latency_seconds_count" in m
    assert (("role", "agent"),) in m["taskyard_ws_connections"]
    assert (("role", "client"),) in m["taskyard_ws_connections"]
    # The recorder is off in these apps: the cancel's event waits in the stream (a first status is not in it).
    assert m["taskyard_recorder_backlog_events"][()] >= 1
    assert m["taskyard_recorder_unapplied_events"][()] == 0


def test_two_apps_in_one_process_keep_separate_registries(make_env) -> None:
    first = make_env()
    second = make_env()
    assert first.client.get("/metrics").status_code == 200
    assert second.client.get("/metrics").status_code == 200
    assert first.client.app.state.metrics.registry is not second.client.app.state.metrics.registry
