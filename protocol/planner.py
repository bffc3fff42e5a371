"""The planner's task types: the contract between the planner API (`/api/planner`) and our LLM workers.

`planner.from_text` turns free text into a plan (title, description, priority, due date, ordered steps).
`planner.reply` answers one chat message: a router picks the executor, planner, summarizer or global agent, and
the agent returns its message plus task patches made through tool calls. The patch shape is seed 002's "option
B" (`{"kind": "update_step", "update_step": {...}}`) so the planner front end gets it unchanged; the API checks
and applies the patches (ownership, known steps) in one transaction. Ids are the planner's integer ids.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

__all__ = (
    "PLANNER_FROM_TEXT",
    "PLANNER_REPLY",
    "AddStep",
    "AgentName",
    "PlanFromTextInput",
    "PlanFromTextOutput",
    "PlanPriority",
    "PlanStep",
    "PlanTaskStatus",
    "PlannerReplyInput",
    "PlannerReplyOutput",
    "RemoveStep",
    "ReorderSteps",
    "SessionMessage",
    "StepFields",
    "StepState",
    "StepStatus",
    "TaskFields",
    "TaskPatch",
    "TaskState",
    "UpdateStep",
    "UpdateTask",
)

PLANNER_FROM_TEXT = "planner.from_text"
PLANNER_REPLY = "planner.reply"

PlanPriority = Literal["low", "medium", "high"]
PlanTaskStatus = Literal["todo", "in_progress", "done", "cancelled"]
StepStatus = Literal["locked", "todo", "in_progress", "done", "blocked"]
AgentName = Literal["executor", "planner", "summarizer", "global"]

_Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
_Detail = Annotated[str, msgspec.Meta(max_length=4000)]
_Minutes = Annotated[int, msgspec.Meta(ge=1, le=100_000)]
_Id = Annotated[int, msgspec.Meta(ge=1, le=2**53 - 1)]
_Aware = Annotated[datetime, msgspec.Meta(tz=True)]
_Zone = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_UNSET = msgspec.UNSET


class _Wire(msgspec.Struct, rename="camel", forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """camelCase, strict, defaults left out."""


# --- planner.from_text -------------------------------------------------------------------------------------


class PlanStep(_Wire, kw_only=True):
    """A step of a new plan (or a step an `add_step` patch inserts)."""

    title: _Title
    detail: _Detail = ""
    estimate_minutes: _Minutes | None = None
    planned_start: _Aware | None = None
    planned_end: _Aware | None = None
    status: StepStatus = "todo"


class PlanFromTextInput(_Wire, kw_only=True):
    """`planner.from_text` input."""

    raw_text: Annotated[str, msgspec.Meta(min_length=1, max_length=20_000)]
    """What the user pasted (any language; Chinese and English are tested)."""
    now: _Aware
    """The user's current time, to resolve "this week", "tomorrow", ..."""
    timezone: _Zone = "UTC"
    """IANA zone of the user, for the same purpose."""


class PlanFromTextOutput(_Wire, kw_only=True):
    """`planner.from_text` result: a validated plan."""

    title: _Title
    description: _Detail = ""
    priority: PlanPriority = "medium"
    due_at: _Aware | None = None
    steps: Annotated[list[PlanStep], msgspec.Meta(min_length=1, max_length=50)]


# --- planner.reply -----------------------------------------------------------------------------------------


class StepState(_Wire, kw_only=True):
    """A stored step, as the agent sees it."""

    id: _Id
    order_index: int
    title: str
    detail: str = ""
    status: StepStatus
    blocking_reason: str | None = None
    estimate_minutes: int | None = None
    planned_start: _Aware | None = None
    planned_end: _Aware | None = None


class TaskState(_Wire, kw_only=True):
    """A stored planner task, as the agent sees it."""

    id: _Id
    title: str
    description: str = ""
    status: PlanTaskStatus
    priority: PlanPriority
    due_at: _Aware | None = None
    steps: Annotated[list[StepState], msgspec.Meta(max_length=200)] = msgspec.field(default_factory=list)


class SessionMessage(_Wire, kw_only=True):
    """A recent message of the session (oldest first)."""

    role: Literal["user", "assistant", "system"]
    content: Annotated[str, msgspec.Meta(max_length=20_000)]
    agent_name: str | None = None


class PlannerReplyInput(_Wire, kw_only=True):
    """`planner.reply` input: the new user message with what the agents need to answer it."""

    session_type: Literal["task", "global"]
    content: Annotated[str, msgspec.Meta(min_length=1, max_length=8000)]
    """The user's new message."""
    now: _Aware
    timezone: _Zone = "UTC"
    task: TaskState | None = None
    """Task sessions: the task with its steps."""
    tasks: Annotated[list[TaskState], msgspec.Meta(max_length=100)] = msgspec.field(default_factory=list)
    """Global sessions: the user's open tasks (steps may be left out)."""
    messages: Annotated[list[SessionMessage], msgspec.Meta(max_length=50)] = msgspec.field(default_factory=list)


class StepFields(_Wire, kw_only=True):
    """Fields an `update_step` patch changes; a field left out is unchanged, `null` clears it."""

    status: StepStatus | msgspec.UnsetType = _UNSET
    title: _Title | msgspec.UnsetType = _UNSET
    detail: _Detail | msgspec.UnsetType = _UNSET
    blocking_reason: Annotated[str, msgspec.Meta(max_length=2000)] | msgspec.UnsetType | None = _UNSET
    estimate_minutes: _Minutes | msgspec.UnsetType | None = _UNSET
    planned_start: _Aware | msgspec.UnsetType | None = _UNSET
    planned_end: _Aware | msgspec.UnsetType | None = _UNSET


class TaskFields(_Wire, kw_only=True):
    """Fields an `update_task` patch changes; a field left out is unchanged, `null` clears it."""

    title: _Title | msgspec.UnsetType = _UNSET
    description: _Detail | msgspec.UnsetType = _UNSET
    status: PlanTaskStatus | msgspec.UnsetType = _UNSET
    priority: PlanPriority | msgspec.UnsetType = _UNSET
    due_at: _Aware | msgspec.UnsetType | None = _UNSET


class UpdateStep(_Wire, kw_only=True):
    task_id: _Id
    step_id: _Id
    fields: StepFields


class AddStep(_Wire, kw_only=True):
    task_id: _Id
    step: PlanStep
    order_index: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    """1-based position of the new step; left out: after the last one."""


class RemoveStep(_Wire, kw_only=True):
    task_id: _Id
    step_id: _Id


class ReorderSteps(_Wire, kw_only=True):
    task_id: _Id
    step_ids: Annotated[list[_Id], msgspec.Meta(min_length=1, max_length=200)]
    """Every step of the task, in the new order."""


class UpdateTask(_Wire, kw_only=True):
    task_id: _Id
    fields: TaskFields


class TaskPatch(_Wire, kw_only=True):
    """One change, seed 002 shape: `kind` names the one member that is set."""

    kind: Literal["update_step", "add_step", "remove_step", "reorder_steps", "update_task"]
    update_step: UpdateStep | None = msgspec.field(default=None, name="update_step")
    add_step: AddStep | None = msgspec.field(default=None, name="add_step")
    remove_step: RemoveStep | None = msgspec.field(default=None, name="remove_step")
    reorder_steps: ReorderSteps | None = msgspec.field(default=None, name="reorder_steps")
    update_task: UpdateTask | None = msgspec.field(default=None, name="update_task")

    def __post_init__(self) -> None:
        members = ("update_step", "add_step", "remove_step", "reorder_steps", "update_task")
        present = [m for m in members if getattr(self, m) is not None]
        if present != [self.kind]:
            raise ValueError(f"a `{self.kind}` patch carries exactly its `{self.kind}` member")

    @property
    def task_id(self) -> int:
        """The planner task this patch changes."""
        member = getattr(self, self.kind)
        return int(member.task_id)


class PlannerReplyOutput(_Wire, kw_only=True):
    """`planner.reply` result."""

    agent_name: AgentName
    """Which agent answered."""
    content: Annotated[str, msgspec.Meta(min_length=1, max_length=20_000)]
    """The assistant message."""
    patches: Annotated[list[TaskPatch], msgspec.Meta(max_length=50)] = msgspec.field(default_factory=list)
    routed_by: Literal["keywords", "model", "session"] = "keywords"
    """How the router chose: a keyword rule, the model (when unsure), or the session type (global)."""
