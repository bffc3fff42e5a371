"""The offline provider: deterministic rules, NOT a model. It keeps every built-in LLM type usable (and the
dev stack demonstrable) with no LLM configured; its answers are mechanical and say so.

Same input, same output: chat echoes, plans split the text into steps, replies match step titles.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from protocol.planner import (
    AgentName,
    PlanFromTextInput,
    PlanFromTextOutput,
    PlannerReplyInput,
    PlanStep,
    StepFields,
    StepState,
    TaskFields,
    TaskPatch,
    TaskState,
    UpdateStep,
    UpdateTask,
)

__all__ = ("NOTICE", "chat_text", "minimal_instance", "plan", "reply")

NOTICE = "[offline provider: deterministic rules, not a model]"
# Full-width Chinese punctuation on purpose.
_SPLIT = re.compile(r"[\n。；;]+|(?:，|,)?\s*(?:然后|接着|再|then|and then|after that)\s*", re.IGNORECASE)  # noqa: RUF001
_MARKER = re.compile(r"^\s*(?:[-*•·]|\(?\d+[.)、）]|（\d+）|第[一二三四五六七八九十\d]+步[:：]?)\s*")  # noqa: RUF001
_URGENT = ("urgent", "asap", "important", "紧急", "重要", "尽快", "马上")
_DONE = ("done", "finished", "completed", "完成", "做完")
_BLOCKED = ("blocked", "stuck", "卡住", "阻塞")
_STARTED = ("started", "working on", "开始")


def chat_text(messages: list[dict[str, Any]], response_schema: dict[str, Any] | None) -> str:
    """The answer to a chat: the last user message echoed, or a minimal JSON instance of the schema."""
    if response_schema is not None:
        return json.dumps(minimal_instance(response_schema), ensure_ascii=False)
    last = next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")
    return f"{NOTICE} You said: {last[:500]}"


def minimal_instance(schema: dict[str, Any]) -> Any:
    """The smallest value the (simple) JSON schema accepts: required properties, first enum value, ..."""
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "object")
    kind = next((k for k in kind if k != "null"), "null") if isinstance(kind, list) else kind
    if kind == "object":
        props = schema.get("properties", {})
        return {name: minimal_instance(props.get(name, {})) for name in schema.get("required", [])}
    if kind == "array":
        return [minimal_instance(schema.get("items", {})) for _ in range(int(schema.get("minItems", 0)))]
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    if kind == "string":
        return "offline" if schema.get("minLength", 0) <= 7 else "offline".ljust(schema["minLength"], ".")
    return None


def plan(data: PlanFromTextInput) -> PlanFromTextOutput:
    """Split the text into steps (lines, sentences, "then"), the first one naming the task."""
    items = [_MARKER.sub("", part).strip() for part in _SPLIT.split(data.raw_text)]
    items = [item[:200] for item in items if item][:50] or [data.raw_text.strip()[:200] or "task"]
    text = data.raw_text.lower()
    return PlanFromTextOutput(
        title=items[0][:80],
        description=f"{NOTICE} Planned from your text: {len(items)} step(s).",
        priority="high" if any(word in text for word in _URGENT) else "medium",
        steps=[PlanStep(title=item) for item in items],
    )


def reply(data: PlannerReplyInput, agent: AgentName) -> tuple[str, list[TaskPatch]]:
    """The agent's message and patches, by rules."""
    if agent == "global":
        open_tasks = [t for t in data.tasks if t.status not in ("done", "cancelled")]
        lines = [f"- {t.title}" + (f" (due {t.due_at.isoformat()})" if t.due_at else "") for t in open_tasks[:10]]
        return f"{NOTICE} You have {len(open_tasks)} open task(s).\n" + "\n".join(lines), []
    task = data.task
    if task is None:
        return f"{NOTICE} This session has no task.", []
    if agent == "summarizer":
        counts = {status: sum(s.status == status for s in task.steps) for status in ("done", "in_progress", "blocked")}
        left = len(task.steps) - counts["done"]
        return (
            f"{NOTICE} {task.title}: {counts['done']} of {len(task.steps)} step(s) done, "
            f"{counts['in_progress']} in progress, {counts['blocked']} blocked, {left} left.",
            [],
        )
    if agent == "planner":
        return _postpone(data, task)
    return _progress(data.content, task)


def _postpone(data: PlannerReplyInput, task: TaskState) -> tuple[str, list[TaskPatch]]:
    if task.due_at is None:
        return f"{NOTICE} The task has no due date to move; tell me the new one.", []
    due = task.due_at + dt.timedelta(days=1)
    patch = TaskPatch(kind="update_task", update_task=UpdateTask(task_id=task.id, fields=TaskFields(due_at=due)))
    return f"{NOTICE} Moved the due date by one day, to {due.isoformat()}.", [patch]


def _progress(content: str, task: TaskState) -> tuple[str, list[TaskPatch]]:
    text = content.lower()
    step = _mentioned_step(text, task.steps)
    open_steps = [s for s in task.steps if s.status != "done"]
    if step is None:
        following = open_steps[0].title if open_steps else "nothing: every step is done"
        return f"{NOTICE} No step matched your message. Next: {following}.", []
    fields: StepFields | None = None
    if any(word in text for word in _BLOCKED):
        fields, said = StepFields(status="blocked", blocking_reason=content[:2000]), "blocked"
    elif any(word in text for word in _DONE):
        fields, said = StepFields(status="done"), "done"
    elif any(word in text for word in _STARTED):
        fields, said = StepFields(status="in_progress"), "in progress"
    if fields is None:
        return f"{NOTICE} Step «{step.title}» is {step.status}.", []
    patch = TaskPatch(kind="update_step", update_step=UpdateStep(task_id=task.id, step_id=step.id, fields=fields))
    return f"{NOTICE} Marked step «{step.title}» as {said}.", [patch]


def _mentioned_step(text: str, steps: list[StepState]) -> StepState | None:
    for step in sorted(steps, key=lambda s: -len(s.title)):  # the longest title that appears wins
        if step.title.lower() in text:
            return step
    number = re.search(r"(?:step|第)\s*(\d+)", text)
    if number:
        wanted = int(number.group(1))
        return next((s for s in steps if s.order_index == wanted), None)
    return None
