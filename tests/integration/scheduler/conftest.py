"""Fixtures for scheduler tests against a real Redis (the `redis_*` fixtures of tests/conftest.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from scheduler.client import SchedulerClient
from scheduler.clock import FakeClock
from scheduler.service import SchedulerService
from scheduler.settings import SchedulerSettings
from scheduler.types import AgentSpec, InboxEntry, TaskSpec

if TYPE_CHECKING:
    import redis.asyncio


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sched_settings(redis_prefix: str) -> SchedulerSettings:
    return SchedulerSettings(
        prefix=redis_prefix,
        sweep_interval_s=0.05,
        assign_timeout_s=2.0,
        retry_base_s=0.2,
        retry_max_s=2.0,
        dispatch_batch=50,
        task_ttl_s=600,
        inbox_ttl_s=600,
        agent_keep_s=60,
        instance=f"test-{uuid.uuid4().hex[:6]}",
    )


@pytest.fixture
def sched(redis_client: redis.asyncio.Redis, sched_settings: SchedulerSettings, clock: FakeClock) -> SchedulerClient:
    return SchedulerClient(redis_client, prefix=sched_settings.prefix, clock=clock, settings=sched_settings)


@pytest.fixture
def service(redis_client: redis.asyncio.Redis, sched_settings: SchedulerSettings, clock: FakeClock) -> SchedulerService:
    return SchedulerService(redis_client, sched_settings, clock)


def spec(
    task_id: str | None = None,
    *,
    priority: int = 5,
    caps: tuple[str, ...] = (),
    agent_id: str | None = None,
    max_attempts: int = 3,
    timeout_s: int = 30,
    run_at_ms: int | None = None,
    owner: str = "owner-1",
) -> TaskSpec:
    return TaskSpec(
        task_id=task_id or uuid.uuid4().hex,
        owner_id=owner,
        type="echo",
        input_json=b'{"text":"hi"}',
        priority=priority,
        agent_id=agent_id,
        capabilities=caps,
        timeout_s=timeout_s,
        max_attempts=max_attempts,
        run_at_ms=run_at_ms,
    )


@dataclass
class FakeAgent:
    """An agent as the API would drive it: presence, inbox reads, frames."""

    sched: SchedulerClient
    agent_id: str
    concurrency: int = 1
    caps: tuple[str, ...] = ()
    lease_s: float = 600.0
    received: list[InboxEntry] = field(default_factory=list)

    async def online(self, *, accepting: bool = True) -> bool:
        spec = AgentSpec(self.agent_id, "owner-1", self.caps, self.concurrency, accepting)
        return await self.sched.agent_online(spec, lease_s=self.lease_s)

    async def inbox(self, kind: str | None = "submit") -> list[InboxEntry]:
        """Everything new in the inbox (acknowledged at once), filtered by kind."""
        entries = await self.sched.read_inbox(self.agent_id, "c1", block_ms=0, count=1000)
        await self.sched.ack_inbox(self.agent_id, [e.entry_id for e in entries])
        self.received.extend(entries)
        return [e for e in entries if kind is None or e.kind == kind]


@pytest.fixture
def make_agent(sched: SchedulerClient):  # type: ignore[no-untyped-def]
    def build(agent_id: str, concurrency: int = 1, caps: tuple[str, ...] = (), lease_s: float = 600.0) -> FakeAgent:
        return FakeAgent(sched, agent_id, concurrency, caps, lease_s)

    return build
