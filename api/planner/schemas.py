"""Bodies of `/api/planner` (seed 002, camelCase): requests refuse unknown fields; answers write every field,
with `null` where a value is absent, exactly as the seed shows them.

`userId` is the taskyard user id (a UUID string); every other id is an integer as in the seed.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec

from protocol.planner import PlanPriority, PlanTaskStatus, StepStatus, TaskPatch

__all__ = (
    "MAX_API_KEY_LENGTH",
    "MAX_MESSAGE_CHARS",
    "MAX_RAW_TEXT_CHARS",
    "MIN_RAW_TEXT_CHARS",
    "FromTextCreate",
    "JobError",
    "JobOut",
    "JobView",
    "LlmSettingsOut",
    "LlmSettingsUpdate",
    "LlmSettingsView",
    "MessageCreate",
    "MessageListOut",
    "MessageView",
    "PlannerTaskDetail",
    "PlannerTaskView",
    "RejectedPatch",
    "ReplyOut",
    "SessionOut",
    "SessionView",
    "StepView",
    "TaskListOut",
    "TaskWithSession",
)

MIN_RAW_TEXT_CHARS = 4
"""Shorter pasted text (after trimming) is refused with 400, as seed 002 says."""
MAX_RAW_TEXT_CHARS = 20_000
MAX_MESSAGE_CHARS = 8000
MAX_API_KEY_LENGTH = 1024

_ApiKey = Annotated[str, msgspec.Meta(max_length=MAX_API_KEY_LENGTH, pattern=r"^[\x21-\x7e]*$")]
_Model = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")]


class _In(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """Requests: camelCase, unknown fields refused."""


class _Out(msgspec.Struct, rename="camel", kw_only=True):
    """Answers: camelCase, every field written (null included)."""


# --- requests ------------------------------------------------------------------------------------------


class FromTextCreate(_In):
    raw_text: Annotated[str, msgspec.Meta(max_length=MAX_RAW_TEXT_CHARS)] = ""
    """The pasted text; empty or shorter than 4 characters (trimmed) is a 400."""


class MessageCreate(_In):
    content: Annotated[str, msgspec.Meta(max_length=MAX_MESSAGE_CHARS)] = ""
    """The user's message; empty (trimmed) is a 400."""


class LlmSettingsUpdate(_In):
    """Absent fields keep their value; `apiKey: null` (or "") clears the key. `baseUrl` is needed the first time."""

    base_url: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)] | msgspec.UnsetType = msgspec.UNSET
    api_key: _ApiKey | msgspec.UnsetType | None = msgspec.UNSET
    """Write-only: stored encrypted, never returned."""
    model: _Model | msgspec.UnsetType | None = msgspec.UNSET


# --- answers -------------------------------------------------------------------------------------------


class StepView(_Out):
    id: int
    task_id: int
    order_index: int
    """1-based."""
    title: str
    detail: str
    status: StepStatus
    blocking_reason: str | None
    estimate_minutes: int | None
    planned_start: dt.datetime | None
    planned_end: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


class PlannerTaskView(_Out):
    id: int
    user_id: str
    title: str
    description: str
    status: PlanTaskStatus
    priority: PlanPriority
    due_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


class PlannerTaskDetail(PlannerTaskView):
    steps: list[StepView]
    """In `orderIndex` order."""


class SessionView(_Out):
    id: int
    user_id: str
    task_id: int | None
    type: Literal["task", "global"]
    created_at: dt.datetime


class MessageView(_Out):
    id: int
    session_id: int
    role: Literal["user", "assistant", "system"]
    agent_name: str | None
    content: str
    created_at: dt.datetime


class TaskWithSession(_Out):
    """`POST /tasks/from-text` and `GET /tasks/{id}`."""

    task: PlannerTaskDetail
    session: SessionView


class TaskListOut(_Out):
    tasks: list[PlannerTaskView]
    total: int


class SessionOut(_Out):
    session: SessionView


class MessageListOut(_Out):
    session_id: int
    messages: list[MessageView]
    """Oldest first."""


class RejectedPatch(_Out):
    """A patch the agent proposed that was not applied, and why."""

    patch: TaskPatch
    reason: Literal["task_not_found", "step_not_found", "step_ids_mismatch", "too_many_steps", "invalid_schedule"]
    message: str


class ReplyOut(_Out):
    """`POST /sessions/{id}/messages`: seed 002 option B, plus `rejectedPatches` (empty when all applied)."""

    session_id: int
    assistant_message: MessageView
    task_patches: list[TaskPatch]
    """The patches applied, in the order applied."""
    rejected_patches: list[RejectedPatch]


class LlmSettingsView(_Out):
    base_url: str
    model: str | None
    has_api_key: bool
    """Whether a key is stored; the key itself is never returned."""


class LlmSettingsOut(_Out):
    llm_settings: LlmSettingsView | None


class JobError(_Out):
    error: str
    """`upstream_error`, or the worker's error name."""
    message: str


class JobView(_Out):
    id: str
    kind: Literal["from_text", "reply"]
    status: Literal["pending", "done", "failed"]
    task_id: str | None
    """The scheduler task doing the LLM work (`GET /api/tasks/{taskId}`); null until it is known."""
    created_at: dt.datetime
    finished_at: dt.datetime | None
    error: JobError | None


class JobOut(_Out):
    """`GET /jobs/{id}`: where a request that answered 504 finds its result."""

    job: JobView
    from_text: TaskWithSession | None
    """A done `from_text` job: the body `POST /tasks/from-text` would have answered (the rows as they are now)."""
    reply: ReplyOut | None
    """A done `reply` job: the body `POST /sessions/{id}/messages` would have answered."""
