"""The planner agents' tools: one function per task-patch kind. These schemas are the contract with the
planner API (docs/llm.md shows them): a tool call's name is the patch `kind`, its arguments are the patch
member, exactly as `protocol.planner` decodes it.

Each schema follows the OpenAI strict-mode rules (every property listed in `required`, optional values
nullable, no extra properties) so that any OpenAI-compatible server can enforce it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from protocol.planner import (
    AddStep,
    RemoveStep,
    ReorderSteps,
    StepFields,
    TaskFields,
    TaskPatch,
    TaskState,
    UpdateStep,
    UpdateTask,
)

__all__ = ("PATCH_TOOLS", "ToolCallError", "patch_from_call", "tool_specs")

_STEP_STATUS = ["locked", "todo", "in_progress", "done", "blocked"]
_TIME = {"type": ["string", "null"], "description": "RFC 3339 with an offset, or null to clear"}


def _obj(properties: dict[str, Any], description: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    if description:
        schema["description"] = description
    return schema


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


_ID = {"type": "integer", "minimum": 1}
_STEP_FIELDS = _obj(
    {
        "status": _nullable("string", enum=[*_STEP_STATUS, None]),
        "title": _nullable("string", maxLength=200),
        "detail": _nullable("string", maxLength=4000),
        "blockingReason": _nullable("string", maxLength=2000),
        "estimateMinutes": _nullable("integer", minimum=1),
        "plannedStart": _TIME,
        "plannedEnd": _TIME,
    },
    "Only the fields to change; null for every other field (leave unchanged).",
)
_TASK_FIELDS = _obj(
    {
        "title": _nullable("string", maxLength=200),
        "description": _nullable("string", maxLength=4000),
        "status": _nullable("string", enum=["todo", "in_progress", "done", "cancelled", None]),
        "priority": _nullable("string", enum=["low", "medium", "high", None]),
        "dueAt": _TIME,
    },
    "Only the fields to change; null for every other field (leave unchanged).",
)
_NEW_STEP = _obj(
    {
        "title": {"type": "string", "minLength": 1, "maxLength": 200},
        "detail": {"type": "string", "maxLength": 4000},
        "estimateMinutes": _nullable("integer", minimum=1),
        "plannedStart": _TIME,
        "plannedEnd": _TIME,
    }
)

PATCH_TOOLS: dict[str, dict[str, Any]] = {
    "update_step": {
        "description": "Change fields of one step (its status when the user did or started it, times, ...).",
        "parameters": _obj({"taskId": _ID, "stepId": _ID, "fields": _STEP_FIELDS}),
    },
    "add_step": {
        "description": "Insert a new step; orderIndex is its 1-based position (null: after the last step).",
        "parameters": _obj({"taskId": _ID, "step": _NEW_STEP, "orderIndex": _nullable("integer", minimum=1)}),
    },
    "remove_step": {
        "description": "Delete one step.",
        "parameters": _obj({"taskId": _ID, "stepId": _ID}),
    },
    "reorder_steps": {
        "description": "Put every step of the task in a new order (list all step ids).",
        "parameters": _obj({"taskId": _ID, "stepIds": {"type": "array", "items": _ID, "minItems": 1}}),
    },
    "update_task": {
        "description": "Change fields of the task itself (due date, priority, status, title, description).",
        "parameters": _obj({"taskId": _ID, "fields": _TASK_FIELDS}),
    },
}
"""Tool name (= patch kind) -> description and JSON Schema of its arguments."""

_MEMBERS: dict[str, type[msgspec.Struct]] = {
    "update_step": UpdateStep,
    "add_step": AddStep,
    "remove_step": RemoveStep,
    "reorder_steps": ReorderSteps,
    "update_task": UpdateTask,
}


def tool_specs(names: tuple[str, ...]) -> list[dict[str, Any]]:
    """The OpenAI `tools` list for these patch kinds."""
    return [{"type": "function", "function": {"name": n, "strict": True, **PATCH_TOOLS[n]}} for n in names]


class ToolCallError(ValueError):
    """A tool call that is not a valid patch; the message is what the model is told for its repair."""


def _drop_nulls(fields: Any) -> Any:
    # In the strict schema "leave unchanged" is null; in the patch it is a field left out.
    return {k: v for k, v in fields.items() if v is not None} if isinstance(fields, dict) else fields


def patch_from_call(name: str, arguments: str, tasks: list[TaskState], allowed: tuple[str, ...]) -> TaskPatch:
    """The patch a tool call stands for, checked against the tasks the agent was shown.

    Raises:
        ToolCallError: unknown tool, arguments that do not decode, or ids of tasks/steps the agent was not shown.
    """
    member_type = _MEMBERS.get(name)
    if member_type is None or name not in allowed:
        raise ToolCallError(f"unknown tool {name!r}; use one of: {', '.join(allowed)}")
    try:
        raw = msgspec.json.decode(arguments or "{}")
        if isinstance(raw, dict) and "fields" in raw:
            raw["fields"] = _drop_nulls(raw["fields"])
        if isinstance(raw, dict) and name == "add_step" and isinstance(raw.get("step"), dict):
            raw["step"] = _drop_nulls(raw["step"])
            raw = _drop_nulls(raw)
        member = msgspec.convert(raw, type=member_type)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ToolCallError(f"invalid arguments for {name}: {exc}") from None
    _check_ids(name, member, tasks)
    return TaskPatch(kind=name, **{name: member})  # type: ignore[arg-type]


def _check_ids(name: str, member: Any, tasks: list[TaskState]) -> None:
    task = next((t for t in tasks if t.id == member.task_id), None)
    if task is None:
        raise ToolCallError(f"{name}: taskId {member.task_id} is not one of the tasks shown")
    step_ids = {s.id for s in task.steps}
    if hasattr(member, "step_id") and member.step_id not in step_ids:
        raise ToolCallError(f"{name}: stepId {member.step_id} is not a step of task {task.id}")
    if name == "reorder_steps" and sorted(member.step_ids) != sorted(step_ids):
        raise ToolCallError(f"reorder_steps must list every step id of task {task.id} exactly once")
    if isinstance(member, UpdateStep | UpdateTask) and member.fields == (
        StepFields() if name == "update_step" else TaskFields()
    ):
        raise ToolCallError(f"{name}: no field to change")
