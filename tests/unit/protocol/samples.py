"""One valid sample payload per wire type, shared by the protocol tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING
from uuid import UUID

import msgspec

from protocol.messages import (
    Ack,
    AgentStatus,
    AuthError,
    AuthOk,
    Batch,
    BatchItem,
    ErrorFrame,
    Heartbeat,
    Message,
    Subscribe,
    TaskAccept,
    TaskCancel,
    TaskError,
    TaskProgress,
    TaskRef,
    TaskResult,
    TaskStatusEvent,
    TaskStream,
    TaskSubmit,
    Unsubscribe,
)
from protocol.status import TaskStatus

if TYPE_CHECKING:
    from protocol.envelope import MessageType

TASK_ID = "0b5f4e0c-5d1a-4a57-a3b4-1f6f1a2b3c4d"
AGENT_ID = "agent-7"
FRAME_ID = "3f2b8c1e-9d4a-4e6b-8a7c-2d1e0f9a8b7c"

SAMPLES: dict[MessageType, list[Message]] = {
    "auth/ok": [
        AuthOk(role="agent", subject_id=AGENT_ID, session_id="s-1", heartbeat_interval_s=10, heartbeat_timeout_s=30),
        AuthOk(role="client", subject_id="u-1", session_id="s-2", heartbeat_interval_s=0.5, heartbeat_timeout_s=1.5),
    ],
    "batch": [
        Batch(
            frames=[
                BatchItem(id=UUID(FRAME_ID), type="task/accept", payload=msgspec.Raw(b'{"taskId":"t1","attempt":1}')),
                BatchItem(
                    id=UUID(int=1), type="task/result", payload=msgspec.Raw(b'{"taskId":"t1","attempt":1,"output":1}')
                ),
            ]
        )
    ],
    "auth/error": [AuthError(error="unauthorized", message="bad credentials", code=1002)],
    "heartbeat": [
        Heartbeat(interval=10.0),
        Heartbeat(
            running=2,
            capacity=3,
            draining=False,
            running_tasks=[TaskRef(task_id=TASK_ID, attempt=1), TaskRef(task_id="t-2", attempt=4)],
        ),
        Heartbeat(),
    ],
    "agent/status": [AgentStatus(agent_id=AGENT_ID, online=True, running=1, concurrency=4)],
    "task/submit": [
        TaskSubmit(
            task_id=TASK_ID,
            attempt=1,
            type="llm.chat",
            input={"messages": [{"role": "user", "content": "héllo ✓"}], "n": 1.5, "ok": None},
            priority=9,
            timeout_seconds=300,
        ),
        TaskSubmit(task_id=TASK_ID, attempt=2, type="noop", input=None, priority=0, timeout_seconds=1),
    ],
    "task/accept": [TaskAccept(task_id=TASK_ID, attempt=1)],
    "task/progress": [
        TaskProgress(task_id=TASK_ID, attempt=1, data={"tokens": ["a", "b"]}, message="2 tokens"),
        TaskProgress(task_id=TASK_ID, attempt=1, data=[1, 2, 3], seq=7),
        TaskProgress(task_id=TASK_ID, attempt=1),
    ],
    "task/stream": [
        TaskStream(task_id=TASK_ID, attempt=1, offset=0, delta="Hel"),
        TaskStream(task_id=TASK_ID, attempt=2, offset=3, delta="lo ✓ wörld", seq=9),
    ],
    "task/result": [
        TaskResult(task_id=TASK_ID, attempt=3, output={"answer": 42}),
        TaskResult(task_id=TASK_ID, attempt=1, output=None),
        TaskResult(task_id=TASK_ID, attempt=1, output="plain text"),
    ],
    "task/error": [
        TaskError(task_id=TASK_ID, attempt=1, error="TimeoutError", message="upstream slow"),
        TaskError(task_id=TASK_ID, attempt=2, error="bad_input", message="no", retryable=False),
        TaskError(task_id=TASK_ID, attempt=2, error="rate_limited", message="429", retry_delay_s=2.5),
    ],
    "task/cancel": [TaskCancel(task_id=TASK_ID, attempt=1, reason="canceled by owner")],
    "task/status": [
        TaskStatusEvent(
            task_id=TASK_ID,
            seq=2,
            status=TaskStatus.RUNNING,
            attempt=1,
            agent_id=AGENT_ID,
            at=datetime(2026, 11, 25, 5, 0, 0, 123000, tzinfo=UTC),
        ),
        TaskStatusEvent(
            task_id=TASK_ID,
            seq=9,
            status=TaskStatus.QUEUED,
            attempt=1,
            at=datetime(2026, 11, 25, 5, 0, tzinfo=UTC),
            reason="agent lost",
        ),
    ],
    "subscribe": [
        Subscribe(task_id=TASK_ID),
        Subscribe(task_id=TASK_ID, last_seq=4),
        Subscribe(all=True),
        Subscribe(session_id=1001),
    ],
    "unsubscribe": [Unsubscribe(task_id=TASK_ID), Unsubscribe(all=True), Unsubscribe(session_id=1001)],
    "ack": [Ack(ref=FRAME_ID), Ack(ref=FRAME_ID, duplicate=True)],
    "error": [
        ErrorFrame(error="validation_error", message="bad", code=1001, details={"field": "$.payload.taskId"}),
        ErrorFrame(error="stale_attempt", message="attempt 1 is stale", code=3002, ref=FRAME_ID),
    ],
}
