"""One msgspec Struct per WebSocket payload type; the envelope and its type strings live in envelope.py.

Python attributes are snake_case, wire names camelCase. Decoding is strict: unknown fields, wrong types and
out-of-range values are refused. Every docstring states the delivery rule the peers rely on.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

import msgspec

from protocol.limits import (
    MAX_BATCH_FRAMES,
    MAX_HEARTBEAT_TASKS,
    MAX_ID_LENGTH,
    MAX_STREAM_DELTA_CHARS,
    AgentId,
    Attempt,
    EnvelopeRef,
    ErrorName,
    Priority,
    Reason,
    Seq,
    StreamOffset,
    TaskId,
    TaskType,
    TextMessage,
    TimeoutSeconds,
)
from protocol.status import TaskStatus

if TYPE_CHECKING:
    from protocol.errors import ErrorCode, ProtocolError

__all__ = (
    "FEATURE_BATCH",
    "KNOWN_FEATURES",
    "Ack",
    "AgentStatus",
    "AuthError",
    "AuthOk",
    "Batch",
    "BatchItem",
    "ConnectionRole",
    "ErrorFrame",
    "Heartbeat",
    "Message",
    "Subscribe",
    "TaskAccept",
    "TaskCancel",
    "TaskError",
    "TaskProgress",
    "TaskRef",
    "TaskResult",
    "TaskStatusEvent",
    "TaskStream",
    "TaskSubmit",
    "Unsubscribe",
)

ConnectionRole = Literal["agent", "client"]
"""Who is on the other end of a socket."""

FEATURE_BATCH = "batch"
"""Handshake feature: the peer sends and takes `batch` frames (and, for agents, gets `concurrency` in `auth/ok`)."""
KNOWN_FEATURES = frozenset({FEATURE_BATCH})
"""Features a peer may ask for at the handshake (`features=batch`); unknown ones are ignored."""

_SubjectId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
_Seconds = Annotated[float, msgspec.Meta(gt=0, le=86400)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
_AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
_PlannerId = Annotated[int, msgspec.Meta(ge=1, le=2**53 - 1, description="A planner object id (seed 002).")]


class _Payload(msgspec.Struct, rename="camel", forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """Shared config: camelCase wire names, strict decoding, defaults (None, False) left out on encode."""


class AuthOk(_Payload):
    """`auth/ok`, server -> any. Delivery: once, the first frame after a successful handshake."""

    role: ConnectionRole
    """`agent` or `client`."""
    subject_id: _SubjectId
    """The agent id (role=agent) or the user id (role=client)."""
    session_id: _SubjectId
    """This connection's id, for logs and support."""
    heartbeat_interval_s: _Seconds
    """How often the peer should send `heartbeat`."""
    heartbeat_timeout_s: _Seconds
    """Silence after which the server considers the peer gone."""
    features: Annotated[list[str], msgspec.Meta(max_length=16)] | None = None
    """The handshake features the server accepted; only present when the peer asked for some."""
    concurrency: _Count | None = None
    """Agents that asked for features: how many tasks the server's record of this agent lets it run at once."""


class AuthError(_Payload):
    """`auth/error`, server -> any. Delivery: once, then the server closes with 1008."""

    error: ErrorName
    """Catalogue name, e.g. `unauthorized`."""
    message: TextMessage
    """Why authentication failed (never which credential part was wrong)."""
    code: int
    """Catalogue number, e.g. 1002."""


class TaskRef(_Payload):
    """A task attempt, as listed in an agent heartbeat."""

    task_id: TaskId
    attempt: Attempt


class Heartbeat(_Payload):
    """`heartbeat`, both directions. Delivery: best effort, periodic; a lost one is covered by the next.

    The server sends `interval` right after `auth/ok`; agents report their load with the other fields.
    """

    interval: _Seconds | None = None
    """Server -> peer: seconds between heartbeats."""
    running: _Count | None = None
    """Agent -> server: tasks running now."""
    capacity: _Count | None = None
    """Agent -> server: free slots now."""
    draining: bool | None = None
    """Agent -> server: true while shutting down (takes no new work)."""
    running_tasks: Annotated[list[TaskRef], msgspec.Meta(max_length=MAX_HEARTBEAT_TASKS)] | None = None
    """Agent -> server: the attempts it is running, so the server can spot lost ones."""


class AgentStatus(_Payload):
    """`agent/status`, server -> client. Delivery: best effort, not replayed."""

    agent_id: AgentId
    online: bool
    running: _Count
    concurrency: _Count


class TaskSubmit(_Payload):
    """`task/submit`, server -> agent. Delivery: at least once; agents deduplicate by (taskId, attempt)."""

    task_id: TaskId
    attempt: Attempt
    """The fencing token: echo it in every frame about this task."""
    type: TaskType
    input: Any
    """The task's input JSON, as submitted."""
    priority: Priority
    timeout_seconds: TimeoutSeconds
    credentials: Annotated[str, msgspec.Meta(max_length=8192)] | None = None
    """Only to agents an admin marked trusted (our own LLM workers), only for tasks that carry them: the task
    owner's LLM provider settings, sealed by the API (AES-256-GCM with the key it shares with trusted workers,
    bound to the task id). Never sent to other agents, so agents that decode strictly never see it."""


class TaskAccept(_Payload):
    """`task/accept`, agent -> server. Delivery: at least once; idempotent (a repeat is acked as a duplicate)."""

    task_id: TaskId
    attempt: Attempt


class TaskProgress(_Payload):
    """`task/progress`, agent -> server and server -> client.

    Delivery: agent -> server at most once (best effort, may be dropped or coalesced); server -> client
    ordered by `seq` per task and replayable from `lastSeq`. Agents leave `seq` out; the server sets it.
    """

    task_id: TaskId
    attempt: Attempt
    data: Any = None
    """Free-form JSON (e.g. streamed tokens)."""
    message: TextMessage | None = None
    """Human-readable progress line."""
    seq: Seq | None = None
    """Server -> client only: the per-task sequence number."""


class TaskStream(_Payload):
    """`task/stream`, agent -> server and server -> client: a piece of an append-only text stream (LLM tokens).

    Unlike `task/progress` (latest wins), every piece counts: the server never drops or coalesces away a delta,
    though it may merge adjacent ones into one piece. Delivery: agent -> server at least once, deduplicated by
    `offset` (a piece or part of one the server already has is ignored; a piece beyond the end the server has is
    refused with `stream_gap`, whose `details.expectedOffset` says where to resume); server -> client ordered by
    `seq` per task with every other event of the task, replayable from `lastSeq` within the bounded history.
    A reconnecting agent may resend an attempt's whole stream from offset 0: the server keeps only the new part.
    """

    task_id: TaskId
    attempt: Attempt
    offset: StreamOffset
    """UTF-8 bytes of this attempt's stream before `delta` (0 for the first piece)."""
    delta: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STREAM_DELTA_CHARS)]
    """The text appended."""
    seq: Seq | None = None
    """Server -> client only: the per-task sequence number."""


class TaskResult(_Payload):
    """`task/result`, agent -> server. Delivery: at least once; the agent resends until it gets an `ack`.

    The server acks only after the result is committed; a repeat is acked with `duplicate: true`.
    """

    task_id: TaskId
    attempt: Attempt
    output: Any
    """The task's output JSON."""


class TaskError(_Payload):
    """`task/error`, agent -> server. Delivery: at least once; the agent resends until it gets an `ack`."""

    task_id: TaskId
    attempt: Attempt
    error: ErrorName
    """Error name, e.g. the exception type or `timeout`."""
    message: TextMessage
    """Truncated, human-readable message."""
    retryable: bool = True
    """False fails the task at once; true retries while attempts remain."""
    retry_delay_s: Annotated[float, msgspec.Meta(ge=0, le=86400)] | None = None
    """Ask for this backoff instead of the default."""


class TaskCancel(_Payload):
    """`task/cancel`, server -> agent. Delivery: at least once; a cancel for an unknown attempt is ignored."""

    task_id: TaskId
    attempt: Attempt
    reason: Reason


class TaskStatusEvent(_Payload):
    """`task/status`, server -> client. Delivery: ordered by `seq` per task, replayable from `lastSeq`."""

    task_id: TaskId
    seq: Seq
    status: TaskStatus
    attempt: Attempt
    at: _AwareDatetime
    """When the change happened (RFC 3339)."""
    agent_id: AgentId | None = None
    """The agent holding the task, when there is one."""
    reason: Reason | None = None
    """Why, for requeues, failures and cancels."""


def _one_target(task_id: str | None, session_id: int | None, all_: bool) -> None:
    if (task_id is not None) + (session_id is not None) + all_ != 1:
        # Raised inside decoding, msgspec turns this into a ValidationError naming the payload.
        raise ValueError("give exactly one of `taskId`, `sessionId` or `all: true`")


class Subscribe(_Payload):
    """`subscribe`, client -> server: watch one task (`taskId`), all of the user's tasks (`all: true`), or a
    planner session (`sessionId`: the events of the tasks answering its messages, e.g. an LLM reply's tokens).

    Delivery: answered once, by `ack` or `error`. With `lastSeq`, the server first replays the task's
    events after that sequence number, then streams new ones, in order.
    """

    task_id: TaskId | None = None
    all: bool = False
    last_seq: Seq | None = None
    """Replay events of `taskId` after this sequence number."""
    session_id: _PlannerId | None = None
    """A planner session of the user (`/api/planner/sessions/{id}`)."""

    def __post_init__(self) -> None:
        _one_target(self.task_id, self.session_id, self.all)
        if self.last_seq is not None and self.task_id is None:
            raise ValueError("`lastSeq` needs `taskId`")


class Unsubscribe(_Payload):
    """`unsubscribe`, client -> server: stop watching one task, a planner session, or everything.

    Delivery: answered once, by `ack`.
    """

    task_id: TaskId | None = None
    all: bool = False
    session_id: _PlannerId | None = None

    def __post_init__(self) -> None:
        _one_target(self.task_id, self.session_id, self.all)


class Ack(_Payload):
    """`ack`, server -> any. Delivery: once per acknowledged frame; `ref` is that frame's envelope id."""

    ref: EnvelopeRef
    duplicate: bool | None = None
    """True when the frame repeated one already applied (nothing changed)."""


class ErrorFrame(_Payload):
    """`error`, server -> any. Delivery: once per refused frame; the connection stays open."""

    error: ErrorName
    """Catalogue name, e.g. `validation_error`."""
    message: TextMessage
    code: int
    """Catalogue number, e.g. 1001."""
    details: dict[str, Any] | None = None
    """Structured context, e.g. `{"field": "$.payload.taskId"}`."""
    ref: EnvelopeRef | None = None
    """The refused frame's envelope id, when it could be read."""

    @classmethod
    def of(
        cls, code: ErrorCode, message: str, *, details: dict[str, Any] | None = None, ref: str | None = None
    ) -> ErrorFrame:
        """Build an error frame for a catalogue entry."""
        return cls(error=code.error, message=message, code=code.code, details=details, ref=ref)

    @classmethod
    def from_error(cls, exc: ProtocolError) -> ErrorFrame:
        """Build the error frame answering a refused frame."""
        return cls.of(exc.code, exc.message, details=exc.details, ref=exc.ref)


class BatchItem(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One frame inside a `batch`: an envelope whose `ts` may be left out (so a frame fits in as it is)."""

    id: uuid.UUID
    """This item's id: `ack` and `error` frames name it in `ref`, as for a frame of its own."""
    type: str
    """Any wire type but `batch` (batches do not nest)."""
    payload: msgspec.Raw
    """The item's payload, decoded with its type's rules and limits by `decode_batch()`."""
    ts: Annotated[int, msgspec.Meta(ge=0)] | None = None
    """The sender's clock when the item was made; the batch's own `ts` when left out."""


class Batch(_Payload):
    """`batch`, both directions, only on connections that negotiated the `batch` feature at the handshake.

    Delivery: exactly as if each item had been sent as a frame of its own, in order — acks, errors, fencing and
    ordering rules are the items' own. Batching only saves framing: a peer sends whatever it has ready in one frame.
    """

    frames: Annotated[list[BatchItem], msgspec.Meta(min_length=1, max_length=MAX_BATCH_FRAMES)]


Message: TypeAlias = (
    AuthOk
    | AuthError
    | Heartbeat
    | AgentStatus
    | TaskSubmit
    | TaskAccept
    | TaskProgress
    | TaskStream
    | TaskResult
    | TaskError
    | TaskCancel
    | TaskStatusEvent
    | Subscribe
    | Unsubscribe
    | Ack
    | ErrorFrame
    | Batch
)
"""Any payload Struct."""
