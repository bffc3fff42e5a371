"""Rows for the planner's integration tests, written straight to the database (no tests here)."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.db.base import utcnow
from api.db.models.planner import PlannerJob, PlannerSession, PlannerStep, PlannerTask
from api.db.models.tasks import Task
from api.db.models.users import User

PLAN: dict[str, Any] = {
    "title": "Write the report",
    "description": "from a test",
    "priority": "medium",
    "dueAt": None,
    "steps": [{"title": "outline"}, {"title": "draft", "estimateMinutes": 90}, {"title": "review"}],
}


async def user(db: async_sessionmaker[AsyncSession]) -> str:
    row = User(
        id=str(uuid.uuid4()),
        email=f"pl-{secrets.token_hex(5)}@example.com",
        name="P",
        password_hash="not-a-hash",
        role="user",
    )
    async with db() as session:
        session.add(row)
        await session.commit()
    return row.id


async def planner_task(db: async_sessionmaker[AsyncSession], user_id: str, steps: int = 3) -> tuple[int, list[int]]:
    """A planner task with `steps` steps; returns (task id, step ids in order)."""
    now = utcnow()
    async with db() as session:
        task = PlannerTask(user_id=user_id, title="T", description="", status="todo", priority="low", created_at=now)
        task.updated_at = now
        session.add(task)
        await session.flush()
        rows = [
            PlannerStep(
                task_id=task.id, order_index=i, title=f"s{i}", detail="", status="todo", created_at=now, updated_at=now
            )
            for i in range(1, steps + 1)
        ]
        session.add_all(rows)
        await session.commit()
        return task.id, [r.id for r in rows]


async def chat(db: async_sessionmaker[AsyncSession], user_id: str, task_id: int | None = None) -> int:
    async with db() as session:
        row = PlannerSession(
            user_id=user_id, task_id=task_id, type="task" if task_id else "global", created_at=utcnow()
        )
        session.add(row)
        await session.commit()
        return row.id


async def job_with_task(
    db: async_sessionmaker[AsyncSession],
    user_id: str,
    *,
    kind: str = "from_text",
    session_id: int | None = None,
    status: str = "done",
    result: Any = None,
    error: dict[str, Any] | None = None,
    age_s: float = 0.0,
    with_task: bool = True,
) -> tuple[str, str]:
    """A pending job and (unless `with_task` is false) its scheduler task row; returns (job id, task id)."""
    job_id = str(uuid.uuid4())
    task_id = str(uuid.uuid4())
    created = utcnow() - dt.timedelta(seconds=age_s)
    async with db() as session:
        session.add(
            PlannerJob(
                id=job_id,
                user_id=user_id,
                kind=kind,
                task_key=f"planner:{job_id}",
                session_id=session_id,
                state="pending",
                created_at=created,
            )
        )
        if with_task:
            session.add(
                Task(
                    id=task_id,
                    owner_id=user_id,
                    type=f"planner.{kind}",
                    input={"rawText": "x"},
                    priority=5,
                    capabilities=["llm"],
                    timeout_s=60,
                    max_attempts=1,
                    idempotency_key=f"planner:{job_id}",
                    status=status,
                    attempt=1,
                    seq=4,
                    result=result,
                    error=error,
                    created_at=created,
                    updated_at=created,
                )
            )
        await session.commit()
    return job_id, task_id
