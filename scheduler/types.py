"""Plain value types the scheduler hands to its callers (the API) and takes from them.

No Redis here: these are what `SchedulerClient` returns instead of raw replies.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

import msgspec

__all__ = (
    "AgentPresence",
    "AgentSpec",
    "Applied",
    "CancelResult",
    "InboxEntry",
    "Outcome",
    "TaskEvent",
    "TaskSpec",
)

_TERMINAL = frozenset({"done", "failed", "canceled"})


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A task as the scheduler needs it: routing, limits and the submit payload's parts."""

    task_id: str
    owner_id: str
    type: str
    input_json: bytes
    """The task input, already encoded as JSON (spliced into `task/submit` as is)."""
    priority: int
    """0..9, higher runs first."""
    agent_id: str | None
    """The pinned agent, or None to route by capabilities."""
    capabilities: tuple[str, ...]
    timeout_s: int
    max_attempts: int
    run_at_ms: int | None = None
    """Do not queue before this time (ms since the epoch); None means now."""
    attempt: int = 0
    """Dispatches so far (the reconciler passes the stored one when rebuilding)."""
    seq: int = 0
    """Events so far. 0 means a fresh task: its first status becomes event seq 1."""
    status: str = "queued"
    """`queued` or `scheduled` (rebuild hint; terminal statuses are refused)."""

    def __post_init__(self) -> None:
        if self.status in _TERMINAL:
            raise ValueError(f"cannot enqueue a task in terminal status {self.status!r}")
        if not 0 <= self.priority <= 9:
            raise ValueError("priority must be within 0..9")
        if self.max_attempts < 1 or self.timeout_s < 1:
            raise ValueError("max_attempts and timeout_s must be positive")


class Outcome(enum.StrEnum):
    """What an agent frame did. Everything but OK and DUPLICATE changed nothing."""

    OK = "ok"
    DUPLICATE = "duplicate"
    STALE_ATTEMPT = "stale_attempt"
    NOT_ASSIGNED = "not_assigned"
    NOT_FOUND = "not_found"
    TERMINAL = "terminal"
    STREAM_GAP = "stream_gap"
    """`task/stream` only: the piece starts beyond the stream's end (`Applied.expected_offset` says where)."""
    BAD_OFFSET = "bad_offset"
    """`task/stream` only: the piece's new part would start inside a UTF-8 character."""


@dataclass(frozen=True, slots=True)
class Applied:
    """The answer to an agent frame."""

    outcome: Outcome
    seq: int | None
    """The event's seq when the frame produced one."""
    status: str | None
    """The task's status after the frame (None when the task is unknown)."""
    expected_offset: int | None = None
    """`task/stream` refusals: the stream's length in bytes, where the agent must resume."""
    prior: tuple[bytes, ...] = ()
    """`complete`: the attempt's earlier status events (`assigned`, an implied `running`) as the task hash
    keeps them, for the result writer to record with the outcome."""


@dataclass(frozen=True, slots=True)
class CancelResult:
    outcome: Literal["canceled", "not_found", "terminal"]
    seq: int | None
    agent_id: str | None
    """The agent that held the task (it got a cancel entry), if any."""
    attempt: int | None


@dataclass(frozen=True, slots=True)
class AgentSpec:
    agent_id: str
    owner_id: str
    capabilities: tuple[str, ...]
    concurrency: int
    accepting: bool = True
    """False while draining: keep the lease, take no new work."""


@dataclass(frozen=True, slots=True)
class AgentPresence:
    agent_id: str
    running: int
    concurrency: int
    lease_until_ms: int
    capabilities: tuple[str, ...] = ()
    accepting: bool = True


class InboxEntry(msgspec.Struct, frozen=True):
    entry_id: str
    kind: Literal["submit", "cancel"]
    task_id: str
    attempt: int
    payload_json: bytes
    """The encoded `TaskSubmit` / `TaskCancel` payload, ready to wrap in an envelope."""


class TaskEvent(msgspec.Struct, frozen=True):
    """One entry of the events stream (several per task; the recorder reads every one).

    A frozen Struct, not a frozen dataclass: its constructor is C, ~10x cheaper than a frozen dataclass's
    `object.__setattr__` per field."""

    entry_id: str
    task_id: str
    owner_id: str
    seq: int
    type: Literal["task/status", "task/progress", "task/stream"]
    status: str | None
    attempt: int
    agent_id: str | None
    at_ms: int
    reason: str | None
    payload_json: bytes
    """The wire payload, `seq` included."""
    queued_ms: int | None = None
    """An `assigned` entry of a fresh task's first dispatch: when it became queued (that `queued` entry is not
    in the stream; the recorder measures the dispatch latency from this)."""


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    """What reconciling a reconnected agent's running attempts did."""

    requeued: int = 0
    """Running attempts it no longer runs, back in their queues (a loss each)."""
    failed: int = 0
    """Of those, tasks past their loss bound (`worker_lost`)."""
    freed: int = 0
    """Slots held by attempts no longer the agent's."""


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What one sweep did (for logs and tests)."""

    agents_reaped: int = 0
    tasks_requeued: int = 0
    tasks_failed: int = 0
    timed_out: int = 0
    released: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return self.agents_reaped + self.tasks_requeued + self.tasks_failed + self.timed_out + self.released
