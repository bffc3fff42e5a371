"""The planner's machinery on a real database: applying a job exactly once under concurrency, the background
applier, patches, the task waiter's wake-up, the session feed's routing, and sealing at delivery."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from typing import Any

import msgspec
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.db.base import utcnow
from api.db.models.agents import Agent
from api.db.models.planner import (
    LlmSettingsRow,
    PlannerJob,
    PlannerMessage,
    PlannerSession,
    PlannerStep,
    PlannerTask,
)
from api.db.models.tasks import Task
from api.planner.applier import JobApplier
from api.planner.apply import apply_job
from api.planner.credentials import CredentialSealer
from api.planner.crypto import KeyRing
from api.planner.live import SessionFeed
from api.planner.patches import MAX_STEPS_PER_TASK, apply_patches
from api.planner.service import PlannerService
from api.planner.waiter import TaskWaiter
from api.ws.events import WatchEvent
from api.ws.fanout import event_from_payload
from api.ws.registry import SessionRegistry
from protocol.planner import TaskPatch
from scheduler.types import InboxEntry
from tests.e2e.planner_support import unseal
from tests.integration.api import planner_factories as make
from tests.integration.api.test_tasks_support import sessionmaker_fixture  # noqa: F401 - fixture, used by name

Db = async_sessionmaker[AsyncSession]


async def _count(db: Db, model: Any, **where: Any) -> int:
    async with db() as session:
        query = select(func.count()).select_from(model).filter_by(**where)
        return int(await session.scalar(query) or 0)


# --- applying ------------------------------------------------------------------------------------------


async def test_concurrent_appliers_store_a_plan_once(sessionmaker: Db) -> None:
    user = await make.user(sessionmaker)
    job_id, _ = await make.job_with_task(sessionmaker, user, result=make.PLAN)

    jobs = await asyncio.gather(*(apply_job(sessionmaker, job_id) for _ in range(6)))

    assert {j.state for j in jobs if j is not None} == {"done"}
    assert await _count(sessionmaker, PlannerTask, user_id=user) == 1
    async with sessionmaker() as session:
        job = await session.get(PlannerJob, job_id)
        assert job is not None
        assert job.result is not None
        steps = (await session.scalars(select(PlannerStep).filter_by(task_id=job.result["taskId"]))).all()
        messages = (await session.scalars(select(PlannerMessage).filter_by(session_id=job.result["sessionId"]))).all()
    assert sorted((s.order_index, s.title) for s in steps) == [(1, "outline"), (2, "draft"), (3, "review")]
    assert [(m.role, m.agent_name) for m in messages] == [("system", "system")]


async def test_unfinished_failed_and_unusable_tasks(sessionmaker: Db) -> None:
    user = await make.user(sessionmaker)
    running, _ = await make.job_with_task(sessionmaker, user, status="running")
    failed, _ = await make.job_with_task(
        sessionmaker, user, status="failed", error={"error": "RateLimitError", "message": "slow down"}
    )
    garbage, _ = await make.job_with_task(sessionmaker, user, result={"title": ""})
    canceled, _ = await make.job_with_task(sessionmaker, user, status="canceled")

    assert (await apply_job(sessionmaker, running)).state == "pending"  # type: ignore[union-attr]
    failed_job = await apply_job(sessionmaker, failed)
    assert failed_job is not None
    assert (failed_job.state, failed_job.error) == ("failed", {"error": "RateLimitError", "message": "slow down"})
    garbage_job = await apply_job(sessionmaker, garbage)
    assert garbage_job is not None
    assert (garbage_job.state, garbage_job.error["error"]) == ("failed", "invalid_output")  # type: ignore[index]
    canceled_job = await apply_job(sessionmaker, canceled)
    assert canceled_job is not None
    assert canceled_job.error == {"error": "canceled", "message": "the planner task was canceled"}
    assert await _count(sessionmaker, PlannerTask, user_id=user) == 0


async def test_the_background_applier_finishes_late_jobs_and_fails_lost_ones(sessionmaker: Db) -> None:
    user = await make.user(sessionmaker)
    late, task_id = await make.job_with_task(sessionmaker, user, status="running")
    lost, _ = await make.job_with_task(sessionmaker, user, with_task=False, age_s=3600)
    young, _ = await make.job_with_task(sessionmaker, user, with_task=False)
    applier = JobApplier(sessionmaker, interval_s=60, stale_s=600)

    async def states() -> dict[str, str]:
        async with sessionmaker() as session:
            jobs = [await session.get(PlannerJob, j) for j in (late, lost, young)]
        return {j.id: j.state for j in jobs if j is not None}

    await applier.run_once()
    assert await states() == {late: "pending", lost: "failed", young: "pending"}
    async with sessionmaker() as session:
        await session.execute(update(Task).where(Task.id == task_id).values(status="done", result=make.PLAN))
        await session.commit()
    await applier.run_once()
    assert await states() == {late: "done", lost: "failed", young: "pending"}
    assert await _count(sessionmaker, PlannerTask, user_id=user) == 1


# --- patches -------------------------------------------------------------------------------------------


def _patch(data: dict[str, Any]) -> TaskPatch:
    return msgspec.convert(data, TaskPatch)


async def _apply(db: Db, user: str, patches: list[dict[str, Any]]) -> Any:
    async with db() as session:
        outcome = await apply_patches(session, user, [_patch(p) for p in patches], utcnow())
        await session.commit()
    return outcome


async def _steps(db: Db, task_id: int) -> list[tuple[int, str]]:
    async with db() as session:
        rows = (await session.scalars(select(PlannerStep).filter_by(task_id=task_id))).all()
    return sorted((s.order_index, s.title) for s in rows)


async def test_add_remove_reorder_keep_order_indexes_dense(sessionmaker: Db) -> None:
    user = await make.user(sessionmaker)
    task_id, (a, b, c) = await make.planner_task(sessionmaker, user)
    outcome = await _apply(
        sessionmaker,
        user,
        [
            {"kind": "add_step", "add_step": {"taskId": task_id, "step": {"title": "first"}, "orderIndex": 1}},
            {"kind": "remove_step", "remove_step": {"taskId": task_id, "stepId": b}},
            {"kind": "add_step", "add_step": {"taskId": task_id, "step": {"title": "last"}}},
        ],
    )
    assert outcome.rejected == []
    assert await _steps(sessionmaker, task_id) == [(1, "first"), (2, "s1"), (3, "s3"), (4, "last")]
    async with sessionmaker() as session:
        ids = {s.title: s.id for s in (await session.scalars(select(PlannerStep).filter_by(task_id=task_id))).all()}
    order = [ids["last"], ids["s3"], ids["s1"], ids["first"]]

    outcome = await _apply(
        sessionmaker,
        user,
        [
            {"kind": "reorder_steps", "reorder_steps": {"taskId": task_id, "stepIds": order[:3]}},
            {"kind": "reorder_steps", "reorder_steps": {"taskId": task_id, "stepIds": order}},
        ],
    )
    assert [r.reason for r in outcome.rejected] == ["step_ids_mismatch"]
    assert await _steps(sessionmaker, task_id) == [(1, "last"), (2, "s3"), (3, "s1"), (4, "first")]
    assert {ids["s1"], ids["s3"]} == {a, c}  # the surviving original steps kept their ids


async def test_rejections_leave_the_rows_as_they_were(sessionmaker: Db) -> None:
    user = await make.user(sessionmaker)
    other = await make.user(sessionmaker)
    task_id, (first, *_) = await make.planner_task(sessionmaker, user)
    foreign_id, (foreign_step, *_) = await make.planner_task(sessionmaker, other)
    _, (step_of_another_task, *_) = await make.planner_task(sessionmaker, user)
    outcome = await _apply(
        sessionmaker,
        user,
        [
            {"kind": "update_task", "update_task": {"taskId": foreign_id, "fields": {"title": "mine now"}}},
            {"kind": "remove_step", "remove_step": {"taskId": foreign_id, "stepId": foreign_step}},
            {"kind": "update_step", "update_step": {"taskId": task_id, "stepId": step_of_another_task, "fields": {}}},
            {
                "kind": "update_step",
                "update_step": {
                    "taskId": task_id,
                    "stepId": first,
                    "fields": {"plannedStart": "2025-12-08T16:00:00+08:00", "plannedEnd": "2025-12-08T07:00:00Z"},
                },
            },
            {"kind": "update_task", "update_task": {"taskId": 2**53 - 1, "fields": {"status": "done"}}},
        ],
    )
    assert outcome.applied == []
    assert [r.reason for r in outcome.rejected] == [
        "task_not_found",
        "task_not_found",
        "step_not_found",
        "invalid_schedule",
        "task_not_found",
    ]
    async with sessionmaker() as session:
        foreign = await session.get(PlannerTask, foreign_id)
        step = await session.get(PlannerStep, first)
    assert foreign is not None
    assert foreign.title == "T"
    assert step is not None
    assert step.planned_start is None


async def test_a_task_holds_at_most_the_steps_an_agent_can_see(sessionmaker: Db) -> None:
    user = await make.user(sessionmaker)
    task_id, _ = await make.planner_task(sessionmaker, user, steps=MAX_STEPS_PER_TASK)
    add = {"kind": "add_step", "add_step": {"taskId": task_id, "step": {"title": "one too many"}}}

    outcome = await _apply(sessionmaker, user, [add])

    assert [r.reason for r in outcome.rejected] == ["too_many_steps"]


async def test_times_are_stored_and_answered_in_utc(sessionmaker: Db) -> None:
    user = await make.user(sessionmaker)
    task_id, (first, *_) = await make.planner_task(sessionmaker, user)
    fields = {"plannedStart": "2025-12-08T22:00:00+08:00", "blockingReason": "waiting for data"}
    await _apply(
        sessionmaker,
        user,
        [{"kind": "update_step", "update_step": {"taskId": task_id, "stepId": first, "fields": fields}}],
    )
    async with sessionmaker() as session:
        step = await session.get(PlannerStep, first)
    assert step is not None
    assert step.planned_start == dt.datetime(2025, 12, 8, 14, 0, tzinfo=dt.UTC)
    assert step.blocking_reason == "waiting for data"


# --- the waiter and the session feed ---------------------------------------------------------------------


def _status_event(task_id: str, owner_id: str, seq: int, status: str) -> WatchEvent:
    payload = msgspec.json.encode(
        {"taskId": task_id, "seq": seq, "status": status, "attempt": 1, "at": "2026-01-01T00:00:00Z"}
    )
    return event_from_payload("task/status", task_id, owner_id, seq, payload)


async def test_a_terminal_event_wakes_the_waiter_long_before_its_recheck(sessionmaker: Db) -> None:
    user = await make.user(sessionmaker)
    _, task_id = await make.job_with_task(sessionmaker, user, status="running")
    registry = SessionRegistry()
    waiter = TaskWaiter(sessionmaker, registry, recheck_s=600)
    waiting = asyncio.create_task(waiter.wait(task_id, timeout_s=600))
    while not registry.targets(user, task_id):
        await asyncio.sleep(0.01)
    async with sessionmaker() as session:
        await session.execute(update(Task).where(Task.id == task_id).values(status="done", result={"ok": 1}))
        await session.commit()
    for watcher in registry.targets(user, task_id):
        watcher.deliver(_status_event(task_id, user, 5, "done"))

    assert await asyncio.wait_for(waiting, timeout=10)  # woken by the event, not by the 600 s recheck
    assert not registry.targets(user, task_id)  # and it cleaned up after itself
    assert not await TaskWaiter(sessionmaker, None, recheck_s=0.05).wait("no-such-task", timeout_s=0.2)


class _Socket:
    def __init__(self) -> None:
        self.events: list[WatchEvent] = []
        self.closed: list[int] = []

    def deliver_session_event(self, event: WatchEvent) -> None:
        self.events.append(event)

    def request_close(self, code: int, reason: str) -> None:
        self.closed.append(code)


async def test_the_feed_routes_a_reply_tasks_events_to_its_sessions_watchers_in_order(sessionmaker: Db) -> None:
    user = await make.user(sessionmaker)
    other = await make.user(sessionmaker)
    mine, theirs = await make.chat(sessionmaker, user), await make.chat(sessionmaker, other)
    other_chat_of_mine = await make.chat(sessionmaker, user)
    _, reply_task = await make.job_with_task(sessionmaker, user, kind="reply", session_id=mine, status="running")
    _, unrelated_task = await make.job_with_task(sessionmaker, user, status="running")
    registry = SessionRegistry()
    feed = SessionFeed(sessionmaker, registry)
    watcher, bystander = _Socket(), _Socket()

    assert await feed.watch(watcher, user, mine)
    assert await feed.watch(bystander, user, other_chat_of_mine)
    assert not await feed.watch(watcher, user, theirs)  # another user's session: refused
    events = [_status_event(reply_task, user, seq, "running") for seq in (3, 4, 5)]
    for event in [events[0], _status_event(unrelated_task, user, 2, "running"), *events[1:]]:
        for target in registry.targets(user, event.task_id):
            target.deliver(event)  # as the fan-out does; the first one starts the lookup, the rest are held
    for _ in range(200):
        if len(watcher.events) == 3:
            break
        await asyncio.sleep(0.02)

    assert [e.seq for e in watcher.events] == [3, 4, 5]
    assert bystander.events == []
    feed.unwatch_all(watcher)
    feed.unwatch_all(bystander)
    assert not registry.targets(user, reply_task)
    await feed.stop()


# --- sealing at delivery -------------------------------------------------------------------------------


def _entry(task_id: str, task_type: str) -> InboxEntry:
    payload = msgspec.json.encode(
        {"taskId": task_id, "attempt": 1, "type": task_type, "input": {"a": 1}, "priority": 5, "timeoutSeconds": 60}
    )
    return InboxEntry(entry_id="1-0", kind="submit", task_id=task_id, attempt=1, payload_json=payload)


async def _agent(db: Db, owner: str, *, trusted: bool) -> str:
    agent_id = f"agent-{secrets.token_hex(4)}"
    async with db() as session:
        session.add(
            Agent(
                id=agent_id,
                owner_id=owner,
                name="a",
                type="llm",
                capabilities=["llm"],
                concurrency=1,
                tags=[],
                meta={},
                is_public=True,
                trusted=trusted,
                token_hash="0" * 64,
            )
        )
        await session.commit()
    return agent_id


@pytest.mark.parametrize("broken_key", [False, True])
async def test_sealing_at_delivery(sessionmaker: Db, broken_key: bool) -> None:
    seal_key, ring = secrets.token_bytes(32), KeyRing([secrets.token_bytes(32)])
    user = await make.user(sessionmaker)
    no_settings = await make.user(sessionmaker)
    trusted, untrusted = await _agent(sessionmaker, user, trusted=True), await _agent(sessionmaker, user, trusted=False)
    blob = ring.encrypt(user, "sk-live")
    async with sessionmaker() as session:
        session.add(
            LlmSettingsRow(
                user_id=user,
                base_url="https://api.example.com/v1",
                model="m",
                api_key_enc=blob[:-1] + bytes([blob[-1] ^ 1]) if broken_key else blob,
            )
        )
        await session.commit()
    _, task_id = await make.job_with_task(sessionmaker, user, status="assigned")
    _, other_task = await make.job_with_task(sessionmaker, no_settings, status="assigned")
    sealer = CredentialSealer(
        sessionmaker, seal_key=seal_key, keys=ring, task_types=("planner.from_text", "llm.chat"), cache_s=5
    )

    sealed = msgspec.json.decode(await sealer.submit_payload(trusted, _entry(task_id, "planner.from_text")))
    expected_key = None if broken_key else "sk-live"
    assert unseal(sealed["credentials"], task_id, key=seal_key) == {
        "baseUrl": "https://api.example.com/v1",
        "apiKey": expected_key,
        "model": "m",
    }
    assert sealed["input"] == {"a": 1}
    # Untouched: an untrusted agent, a type that is not an LLM type, an owner without settings.
    for agent_id, entry in (
        (untrusted, _entry(task_id, "planner.from_text")),
        (trusted, _entry(task_id, "echo")),
        (trusted, _entry(other_task, "llm.chat")),
    ):
        assert await sealer.submit_payload(agent_id, entry) == entry.payload_json
    assert (
        await CredentialSealer(
            sessionmaker, seal_key=None, keys=ring, task_types=("planner.from_text",), cache_s=5
        ).submit_payload(trusted, _entry(task_id, "planner.from_text"))
        == _entry(task_id, "planner.from_text").payload_json
    )


# --- sessions created on first use ------------------------------------------------------------------------


async def test_concurrent_first_uses_create_one_session(sessionmaker: Db) -> None:
    user = await make.user(sessionmaker)
    task_id, _ = await make.planner_task(sessionmaker, user)

    async def first_use(task: int | None) -> int:
        async with sessionmaker() as session:
            found = await PlannerService(session).default_session(user, task)
            return found.id

    global_ids = await asyncio.gather(*(first_use(None) for _ in range(5)))
    task_ids = await asyncio.gather(*(first_use(task_id) for _ in range(5)))

    assert len(set(global_ids)) == 1
    assert len(set(task_ids)) == 1
    assert await _count(sessionmaker, PlannerSession, user_id=user) == 2
