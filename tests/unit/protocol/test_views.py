from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec

from protocol.status import TaskStatus
from protocol.views import AgentView, TaskErrorInfo, TaskEventView, TaskPage, TaskView

T0 = datetime(2026, 11, 25, 5, 0, tzinfo=UTC)


def make_task(**overrides: object) -> TaskView:
    fields: dict[str, object] = {
        "id": "t1",
        "type": "llm.chat",
        "status": TaskStatus.QUEUED,
        "priority": 5,
        "input": {"prompt": "hi"},
        "attempt": 0,
        "max_attempts": 3,
        "capabilities": ["gpu"],
        "timeout_seconds": 60,
        "owner_id": "u1",
        "created_at": T0,
        "updated_at": T0,
    }
    fields.update(overrides)
    return TaskView(**fields)  # type: ignore[arg-type]


def test_task_view_wire_is_camel_case_and_leaves_out_none() -> None:
    wire = msgspec.json.decode(msgspec.json.encode(make_task()))

    assert wire == {
        "id": "t1",
        "type": "llm.chat",
        "status": "queued",
        "priority": 5,
        "input": {"prompt": "hi"},
        "attempt": 0,
        "maxAttempts": 3,
        "capabilities": ["gpu"],
        "timeoutSeconds": 60,
        "ownerId": "u1",
        "createdAt": "2026-11-25T05:00:00Z",
        "updatedAt": "2026-11-25T05:00:00Z",
    }


def test_task_view_with_every_optional_field_round_trips() -> None:
    view = make_task(
        status=TaskStatus.FAILED,
        result={"partial": True},
        error=TaskErrorInfo(error="timeout", message="took too long"),
        agent_id="a1",
        pinned_agent_id="a1",
        run_at=T0,
        idempotency_key="key-1",
        started_at=T0,
        finished_at=T0 + timedelta(seconds=3),
        events=[
            TaskEventView(seq=1, type="task/status", status=TaskStatus.QUEUED, attempt=0, at=T0),
            TaskEventView(seq=2, type="task/progress", attempt=1, agent_id="a1", data={"n": 1}, at=T0),
        ],
    )

    wire = msgspec.json.encode(view)

    assert msgspec.json.decode(wire, type=TaskView) == view
    assert b'"pinnedAgentId":"a1"' in wire
    assert b'"finishedAt":"2026-11-25T05:00:03Z"' in wire


def test_naive_datetimes_are_taken_as_utc() -> None:
    view = make_task(created_at=datetime(2026, 1, 1, 12, 0), started_at=datetime(2026, 1, 1, 12, 1))

    assert view.created_at.tzinfo is UTC
    assert view.started_at is not None
    assert b'"createdAt":"2026-01-01T12:00:00Z"' in msgspec.json.encode(view)


def test_aware_non_utc_datetimes_keep_their_offset() -> None:
    plus_two = timezone(timedelta(hours=2))

    view = make_task(created_at=datetime(2026, 1, 1, 14, 0, tzinfo=plus_two))

    assert b'"createdAt":"2026-01-01T14:00:00+02:00"' in msgspec.json.encode(view)


def test_agent_view_has_no_token_field() -> None:
    assert not [name for name in AgentView.__struct_fields__ if "token" in name.lower()]
    agent = AgentView(
        id="a1",
        name="GPU box",
        type="llm",
        capabilities=["gpu"],
        concurrency=8,
        tags=["eu"],
        meta={"zone": "b"},
        is_public=False,
        trusted=True,
        online=True,
        running=2,
        created_at=T0,
        updated_at=T0,
    )

    wire = msgspec.json.decode(msgspec.json.encode(agent))

    assert wire["isPublic"] is False
    assert wire["trusted"] is True
    assert wire["online"] is True
    assert "token" not in str(wire).lower()


def test_page_wire_names() -> None:
    page = TaskPage(items=[make_task()], total=41, page=2, page_size=20)

    wire = msgspec.json.decode(msgspec.json.encode(page))

    assert (wire["total"], wire["page"], wire["pageSize"], len(wire["items"])) == (41, 2, 20, 1)


def test_views_tolerate_fields_added_later() -> None:
    wire = msgspec.json.encode(make_task())[:-1] + b',"newField":1}'

    assert msgspec.json.decode(wire, type=TaskView) == make_task()
