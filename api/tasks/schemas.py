"""Request bodies of `/api/tasks` (camelCase on the wire); responses are `protocol.views`.

Requests refuse unknown fields, so server-set fields (`status`, `ownerId`, `attempt`, ...) are a 422.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec

from protocol.limits import (
    MAX_BATCH_SIZE,
    MAX_ID_LENGTH,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    Capabilities,
    Priority,
    TaskType,
    TimeoutSeconds,
)
from protocol.views import TaskView

__all__ = (
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_PRIORITY",
    "DEFAULT_TIMEOUT_SECONDS",
    "MAX_ATTEMPTS",
    "IdempotencyKey",
    "TaskBatchCreate",
    "TaskBatchOut",
    "TaskCreate",
)

DEFAULT_PRIORITY = 5
DEFAULT_TIMEOUT_SECONDS = 900
"""LLM tasks are long; a submitter sets its own bound per task."""
DEFAULT_MAX_ATTEMPTS = 3
"""Infrastructure losses (agent died, timeout) count as attempts too."""
MAX_ATTEMPTS = 25

IdempotencyKey = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_IDEMPOTENCY_KEY_LENGTH, pattern=r"^[\x21-\x7e]+$")
]
CallbackUrl = Annotated[str, msgspec.Meta(min_length=10, max_length=2048, pattern=r"^https?://[\x21-\x7e]+$")]
MaxAttempts = Annotated[int, msgspec.Meta(ge=1, le=MAX_ATTEMPTS)]
AgentRef = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]


class TaskCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    type: TaskType
    """What to run, e.g. `llm.chat`; agents pick handlers by it."""
    input: Any = msgspec.field(default_factory=dict)
    """Any JSON value, at most `MAX_TASK_INPUT_BYTES` encoded."""
    priority: Priority = DEFAULT_PRIORITY
    agent_id: AgentRef | None = None
    """Pin the task to one agent (one you may use); excludes `capabilities`."""
    capabilities: Capabilities = msgspec.field(default_factory=list)
    """Every capability the agent must have."""
    timeout_seconds: TimeoutSeconds = DEFAULT_TIMEOUT_SECONDS
    max_attempts: MaxAttempts = DEFAULT_MAX_ATTEMPTS
    run_at: dt.datetime | None = None
    """Not before this time (RFC 3339 with an offset); past or absent means now."""
    idempotency_key: IdempotencyKey | None = None
    """Same as the `Idempotency-Key` header; the two must agree when both are given."""
    callback_url: CallbackUrl | None = None
    """Called with a signed POST when the task ends (instead of your webhook URL; needs `PUT /api/webhook`)."""


class TaskBatchCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    tasks: Annotated[list[TaskCreate], msgspec.Meta(min_length=1, max_length=MAX_BATCH_SIZE)]


class TaskBatchOut(msgspec.Struct, rename="camel", kw_only=True):
    items: list[TaskView]
    """The tasks in request order (existing ones for replayed idempotency keys)."""
