"""The task-type contracts shared by the API and our LLM workers: seed 002's patch shape, strictness."""

from __future__ import annotations

import msgspec
import pytest

from protocol.llm import ChatMessage, LlmChatInput, LlmChatOutput
from protocol.planner import PlanFromTextOutput, PlannerReplyOutput, TaskPatch


def test_patch_keeps_seed_002_shape_and_tells_clear_from_unchanged() -> None:
    raw = (
        b'{"kind":"update_step","update_step":{"taskId":1,"stepId":12,'
        b'"fields":{"plannedStart":"2025-12-08T14:00:00Z","blockingReason":null}}}'
    )
    patch = msgspec.json.decode(raw, type=TaskPatch)

    assert patch.task_id == 1
    assert patch.update_step is not None
    assert patch.update_step.fields.blocking_reason is None  # null: clear it
    assert patch.update_step.fields.status is msgspec.UNSET  # absent: unchanged
    assert msgspec.json.decode(msgspec.json.encode(patch)) == msgspec.json.decode(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"kind":"update_step","add_step":{"taskId":1,"step":{"title":"x"}}}',
        b'{"kind":"remove_step","remove_step":{"taskId":1,"stepId":2},"update_task":{"taskId":1,"fields":{}}}',
        b'{"kind":"drop_table","remove_step":{"taskId":1,"stepId":2}}',
    ],
)
def test_patch_must_carry_exactly_its_own_member(raw: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(raw, type=TaskPatch)


def test_plan_needs_at_least_one_step_and_aware_times() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"title":"t","steps":[]}', type=PlanFromTextOutput)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(
            b'{"title":"t","dueAt":"2025-12-15T23:59:00","steps":[{"title":"s"}]}', type=PlanFromTextOutput
        )
    plan = msgspec.json.decode(b'{"title":"t","steps":[{"title":"s","estimateMinutes":30}]}', type=PlanFromTextOutput)
    assert plan.priority == "medium"
    assert plan.steps[0].status == "todo"


def test_reply_refuses_unknown_agents_and_fields() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"agentName":"root","content":"hi"}', type=PlannerReplyOutput)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"agentName":"global","content":"hi","extra":1}', type=PlannerReplyOutput)


def test_chat_input_and_output_are_camel_case() -> None:
    chat = msgspec.json.decode(
        b'{"messages":[{"role":"user","content":"hi"}],"maxTokens":5,"responseSchema":{"type":"object"}}',
        type=LlmChatInput,
    )
    assert chat.max_tokens == 5
    out = LlmChatOutput(message=ChatMessage(role="assistant", content="hello"), finish_reason="stop", model="m")
    assert msgspec.json.decode(msgspec.json.encode(out))["finishReason"] == "stop"
