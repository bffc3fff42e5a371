"""Read models shared by REST, WebSocket and the SDK: tasks, agents, task events, pages of tasks.

Outbound shapes only (the API encodes them; clients decode them). Unknown fields are tolerated on decode
so that older clients keep working when a field is added. Datetimes are aware; a naive one is taken as
UTC, so the wire always carries RFC 3339 with an offset.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec

from protocol.status import TaskStatus

__all__ = (
    "AgentView",
    "TaskErrorInfo",
    "TaskEventView",
    "TaskPage",
    "TaskView",
)

_AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _aware_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else _aware(value)


class _View(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """Shared config: camelCase wire names; optional fields that are None are left out."""


class TaskErrorInfo(_View):
    """Why a task failed: the last `task/error` (or a server-side reason such as `timeout`)."""

    error: str
    """Error name, e.g. the exception type, `timeout` or `payload_too_large`."""
    message: str
    """Human-readable message."""


class TaskEventView(_View):
    """One entry of a task's history, ordered by `seq`."""

    seq: int
    """Per-task sequence number."""
    type: Literal["task/status", "task/progress", "task/stream"]
    """Which event: a status change, a progress update or a piece of the attempt's text stream."""
    attempt: int
    """The attempt the event belongs to."""
    at: _AwareDatetime
    """When it happened."""
    status: TaskStatus | None = None
    """The new status (status events)."""
    agent_id: str | None = None
    """The agent involved, if any."""
    data: Any = None
    """Progress data (`data`, `message`), a stream piece (`offset`, `delta`), or the reason of a status change."""

    def __post_init__(self) -> None:
        self.at = _aware(self.at)


class TaskView(_View):
    """A task as its owner sees it. `events` appears only when one task is fetched."""

    id: str
    type: str
    """Task type, e.g. `llm.chat`."""
    status: TaskStatus
    priority: int
    """0 (lowest) to 9 (highest)."""
    input: Any
    """The input JSON, as submitted."""
    attempt: int
    """Dispatches so far (the current fencing token)."""
    max_attempts: int
    capabilities: list[str]
    """Capabilities an agent needs to run it."""
    timeout_seconds: int
    owner_id: str
    created_at: _AwareDatetime
    updated_at: _AwareDatetime
    result: Any = None
    """The output JSON, once done."""
    error: TaskErrorInfo | None = None
    """Why it failed, once failed (or the last error while retrying)."""
    agent_id: str | None = None
    """The agent it is assigned to or running on."""
    pinned_agent_id: str | None = None
    """The agent the submitter named, if any."""
    run_at: _AwareDatetime | None = None
    """Not before this time (scheduled tasks)."""
    idempotency_key: str | None = None
    started_at: _AwareDatetime | None = None
    finished_at: _AwareDatetime | None = None
    events: list[TaskEventView] | None = None
    """History, oldest first (GET of one task only)."""

    def __post_init__(self) -> None:
        self.created_at = _aware(self.created_at)
        self.updated_at = _aware(self.updated_at)
        self.run_at = _aware_or_none(self.run_at)
        self.started_at = _aware_or_none(self.started_at)
        self.finished_at = _aware_or_none(self.finished_at)


class AgentView(_View):
    """An agent as its owner sees it. There is no token field, ever: the token is shown once, at creation."""

    id: str
    name: str
    type: str
    """What kind of agent, e.g. `llm` or `custom`."""
    capabilities: list[str]
    concurrency: int
    """Most tasks it runs at once."""
    tags: list[str]
    meta: dict[str, Any]
    is_public: bool
    """Whether other users' tasks may be placed on it."""
    trusted: bool
    """Set by an admin for our own LLM workers: only they receive a task owner's sealed LLM credentials."""
    online: bool
    """Fresh heartbeat right now."""
    running: int
    """Tasks running on it right now."""
    created_at: _AwareDatetime
    updated_at: _AwareDatetime
    last_heartbeat_at: _AwareDatetime | None = None
    """When its presence was last renewed (by a heartbeat or any other frame); absent while offline."""

    def __post_init__(self) -> None:
        self.created_at = _aware(self.created_at)
        self.updated_at = _aware(self.updated_at)
        self.last_heartbeat_at = _aware_or_none(self.last_heartbeat_at)


class TaskPage(_View):
    """One page of a task listing, newest first."""

    items: list[TaskView]
    total: int
    """Tasks matching the filters, across all pages."""
    page: int
    """1-based page number."""
    page_size: int
