"""Every size and length limit of the protocol, in one place, plus the constrained field types built on them.

Limits that an operator may tune live in settings, not here; these are the protocol's hard bounds.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = (
    "MAX_AGENT_FRAME_BYTES",
    "MAX_BATCH_FRAMES",
    "MAX_BATCH_SIZE",
    "MAX_CAPABILITIES",
    "MAX_CAPABILITY_LENGTH",
    "MAX_CLIENT_FRAME_BYTES",
    "MAX_ERROR_CODE_LENGTH",
    "MAX_HEARTBEAT_TASKS",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "MAX_ID_LENGTH",
    "MAX_JSON_DEPTH",
    "MAX_MESSAGE_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_PRIORITY",
    "MAX_PROGRESS_BYTES",
    "MAX_SEQ",
    "MAX_STREAM_BYTES",
    "MAX_STREAM_DELTA_CHARS",
    "MAX_TASK_INPUT_BYTES",
    "MAX_TASK_OUTPUT_BYTES",
    "MAX_TIMEOUT_SECONDS",
    "MAX_TYPE_LENGTH",
    "MIN_PRIORITY",
    "AgentId",
    "Attempt",
    "Capabilities",
    "Capability",
    "EnvelopeRef",
    "ErrorName",
    "Priority",
    "Reason",
    "Seq",
    "StreamOffset",
    "TaskId",
    "TaskType",
    "TextMessage",
    "TimeoutSeconds",
)

# Frames (checked on the raw bytes, before any decoding).
MAX_CLIENT_FRAME_BYTES = 65536
"""Largest frame a client may send (64 KiB; OWASP's WebSocket guidance)."""
MAX_AGENT_FRAME_BYTES = 1048576
"""Largest frame an agent may send (1 MiB: a result plus its envelope)."""

MAX_BATCH_FRAMES = 1000
"""Most items in one `batch` frame (the frame's byte limit applies too)."""

# Payloads.
MAX_TASK_INPUT_BYTES = 262144
"""Largest encoded task input (256 KiB)."""
MAX_TASK_OUTPUT_BYTES = 524288
"""Largest encoded `task/result` payload (512 KiB)."""
MAX_PROGRESS_BYTES = 16384
"""Largest encoded `task/progress` payload (16 KiB): progress is a stream of small updates."""
MAX_STREAM_BYTES = 16384
"""Largest encoded `task/stream` payload (16 KiB): split longer text into several pieces."""
MAX_STREAM_DELTA_CHARS = 8192
"""Longest `delta` of one `task/stream` piece, in characters (the payload limit applies too)."""
MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays/objects in a frame; deeper JSON is refused, never recursed into."""

# Strings and collections.
MAX_TYPE_LENGTH = 128
"""Longest task type name, e.g. `llm.chat`."""
MAX_CAPABILITIES = 32
"""Most capabilities an agent may declare or a task may require."""
MAX_CAPABILITY_LENGTH = 64
"""Longest capability name."""
MAX_ID_LENGTH = 64
"""Longest id (tasks, agents, users, sessions)."""
MAX_NAME_LENGTH = 200
"""Longest display name (agents, users)."""
MAX_IDEMPOTENCY_KEY_LENGTH = 255
"""Longest `Idempotency-Key`."""
MAX_ERROR_CODE_LENGTH = 64
"""Longest error name in an error frame or `task/error` (e.g. `TimeoutError`)."""
MAX_MESSAGE_LENGTH = 2000
"""Longest human-readable message or reason."""
MAX_HEARTBEAT_TASKS = 4096
"""Most entries in a heartbeat's `runningTasks` (above any sane concurrency)."""
MAX_BATCH_SIZE = 500
"""Most tasks in one batch submission."""

# Numbers.
MIN_PRIORITY = 0
"""Lowest priority."""
MAX_PRIORITY = 9
"""Highest priority; higher runs first."""
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
"""Longest task timeout (one week)."""
MAX_SEQ = 2**53 - 1
"""Largest sequence number or attempt: stays exact in JSON doubles and Lua numbers."""

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
# No ':' or braces: ids end up inside Redis key names and hash tags.
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"
_UUID_PATTERN = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"

TaskId = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=MAX_ID_LENGTH, pattern=_ID_PATTERN, description="Task id (letters, digits, . _ -)."
    ),
]
AgentId = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=MAX_ID_LENGTH, pattern=_ID_PATTERN, description="Agent id (letters, digits, . _ -)."
    ),
]
Attempt = Annotated[
    int, msgspec.Meta(ge=0, le=MAX_SEQ, description="Dispatch attempt (the fencing token); 0 before the first.")
]
Seq = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ, description="Per-task event sequence number.")]
StreamOffset = Annotated[
    int, msgspec.Meta(ge=0, le=MAX_SEQ, description="UTF-8 bytes of an attempt's stream before this piece.")
]
Priority = Annotated[
    int, msgspec.Meta(ge=MIN_PRIORITY, le=MAX_PRIORITY, description="0 (lowest) to 9 (highest); higher runs first.")
]
TimeoutSeconds = Annotated[
    int, msgspec.Meta(ge=1, le=MAX_TIMEOUT_SECONDS, description="Seconds the task may run once accepted.")
]
TaskType = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=MAX_TYPE_LENGTH, pattern=_NAME_PATTERN, description="Task type, e.g. llm.chat."
    ),
]
Capability = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_CAPABILITY_LENGTH, pattern=_NAME_PATTERN, description="Capability.")
]
Capabilities = Annotated[list[Capability], msgspec.Meta(max_length=MAX_CAPABILITIES)]
ErrorName = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=MAX_ERROR_CODE_LENGTH, pattern=_NAME_PATTERN, description="Error name, e.g. timeout."
    ),
]
TextMessage = Annotated[str, msgspec.Meta(max_length=MAX_MESSAGE_LENGTH, description="Human-readable text.")]
Reason = Annotated[str, msgspec.Meta(max_length=MAX_MESSAGE_LENGTH, description="Why a change happened.")]
EnvelopeRef = Annotated[str, msgspec.Meta(pattern=_UUID_PATTERN, description="An envelope id (UUID).")]
