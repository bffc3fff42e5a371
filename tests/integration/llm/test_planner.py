"""`planner.from_text` and `planner.reply` through the real SDK against the fake server, and the offline
provider for all three types."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from protocol.planner import PlanFromTextOutput, PlannerReplyOutput
from tests.integration.llm.conftest import NOW, Fake
from worker import Fatal, run_handler
from worker.llm import LlmService, llm_registry

_STEP = {"detail": "", "estimateMinutes": None, "plannedStart": None, "plannedEnd": None}


def _plan(title: str, steps: list[str], due: str | None = None, priority: str = "medium") -> str:
    body = {
        "title": title,
        "description": "d",
        "priority": priority,
        "dueAt": due,
        "steps": [{"title": s, **_STEP} for s in steps],
    }
    return json.dumps(body, ensure_ascii=False)


async def _run(service: LlmService, task_type: str, body: dict[str, Any]) -> Any:
    spec = llm_registry(service).get(task_type)
    assert spec is not None
    return (await run_handler(spec, body)).output


@pytest.mark.parametrize(
    ("text", "answer", "steps"),
    [
        ("Write the paper: read 10 articles, draft, then revise.", _plan("Paper", ["Read", "Draft", "Revise"]), 3),
        (
            "本周完成 AIGC 小论文，先看 10 篇文章，然后写开题",  # noqa: RUF001
            _plan("完成 AIGC 小论文", ["阅读 10 篇文章", "写开题"], "2025-12-14T23:59:00+08:00", "high"),
            2,
        ),
        ("buy milk", _plan("Buy milk", ["Buy milk"]), 1),
        ("\n".join(f"{i}. item {i}" for i in range(1, 41)), _plan("List", [f"item {i}" for i in range(1, 41)]), 40),
    ],
)
async def test_from_text_returns_a_valid_plan(
    fake: Fake, service: LlmService, text: str, answer: str, steps: int
) -> None:
    fake.script("default-model", {"text": answer})
    plan: PlanFromTextOutput = await _run(service, "planner.from_text", {"rawText": text, "now": NOW.isoformat()})
    assert len(plan.steps) == steps
    (call,) = fake.calls("default-model")
    assert call["messages"][-1] == {"role": "user", "content": text}
    assert call["responseFormat"]["json_schema"]["strict"] is True
    assert NOW.isoformat() in call["messages"][0]["content"]


async def test_from_text_repairs_an_invalid_plan_once(fake: Fake, service: LlmService) -> None:
    fake.script("default-model", {"text": '{"title": "x", "steps": []}'}, {"text": _plan("Fixed", ["one"])})
    plan = await _run(service, "planner.from_text", {"rawText": "do it", "now": NOW.isoformat()})
    assert (plan.title, [s.title for s in plan.steps]) == ("Fixed", ["one"])
    assert "Expected `array` of length >= 1" in fake.calls("default-model")[1]["messages"][-1]["content"]


async def test_from_text_fails_clearly_after_a_second_invalid_plan(fake: Fake, service: LlmService) -> None:
    fake.script("default-model", {"text": "no"}, {"text": '{"title": ""}'})
    with pytest.raises(Fatal) as caught:
        await _run(service, "planner.from_text", {"rawText": "do it", "now": NOW.isoformat()})
    assert caught.value.error == "llm_output_invalid"


_TASK = {
    "id": 1,
    "title": "Paper",
    "status": "in_progress",
    "priority": "high",
    "dueAt": "2025-12-15T23:59:00+08:00",
    "steps": [
        {"id": 11, "orderIndex": 1, "title": "Read articles", "status": "done"},
        {"id": 12, "orderIndex": 2, "title": "Write draft", "status": "todo"},
    ],
}


def _reply_input(content: str, session_type: str = "task") -> dict[str, Any]:
    body: dict[str, Any] = {"sessionType": session_type, "content": content, "now": NOW.isoformat()}
    if session_type == "task":
        body["task"] = _TASK
    else:
        body["tasks"] = [_TASK]
    return body


@pytest.mark.parametrize(
    ("content", "session", "agent", "routed_by", "tool", "args"),
    [
        ("I finished the draft", "task", "executor", "keywords", "update_step",
         {"taskId": 1, "stepId": 12, "fields": {"status": "done", "title": None, "detail": None,
          "blockingReason": None, "estimateMinutes": None, "plannedStart": None, "plannedEnd": None}}),
        ("请帮我重新规划, 推迟截止", "task", "planner", "keywords", "update_task",
         {"taskId": 1, "fields": {"dueAt": "2025-12-20T23:59:00+08:00", "title": None, "description": None,
          "status": None, "priority": None}}),
        ("give me a summary", "task", "summarizer", "keywords", None, None),
        ("what is due today?", "global", "global", "session", "update_task",
         {"taskId": 1, "fields": {"priority": "low", "title": None, "description": None, "status": None,
          "dueAt": None}}),
    ],
)  # fmt: skip
async def test_reply_routes_to_each_agent_and_returns_patches_from_tool_calls(
    fake: Fake,
    service: LlmService,
    content: str,
    session: str,
    agent: str,
    routed_by: str,
    tool: str | None,
    args: dict[str, Any] | None,
) -> None:
    calls = [{"name": tool, "arguments": args}] if tool else []
    fake.script("default-model", {"text": "Done: updated.", "tool_calls": calls})
    out: PlannerReplyOutput = await _run(service, "planner.reply", _reply_input(content, session))
    assert (out.agent_name, out.routed_by, out.content) == (agent, routed_by, "Done: updated.")
    assert [p.kind for p in out.patches] == ([tool] if tool else [])
    (call,) = fake.calls("default-model")
    offered = [t["function"]["name"] for t in call["tools"] or []]
    assert (tool in offered) if tool else offered == []
    if tool == "update_step":
        assert out.patches[0].update_step is not None
        assert out.patches[0].update_step.fields.status == "done"
        assert out.patches[0].update_step.fields.title is msgspec.UNSET  # null in the call: left unchanged


async def test_reply_asks_the_model_to_route_when_the_keywords_are_unsure(fake: Fake, service: LlmService) -> None:
    fake.script("default-model", {"text": '{"agent": "summarizer"}'}, {"text": "Half done."})
    out = await _run(service, "planner.reply", _reply_input("hmm, thoughts?"))
    assert (out.agent_name, out.routed_by, out.content, out.patches) == ("summarizer", "model", "Half done.", [])


async def test_reply_repairs_an_invalid_tool_call_once(fake: Fake, service: LlmService) -> None:
    bad = {"name": "update_step", "arguments": {"taskId": 1, "stepId": 99, "fields": {"status": "done"}}}
    good = {"name": "update_step", "arguments": {"taskId": 1, "stepId": 12, "fields": {"status": "in_progress"}}}
    fake.script("default-model", {"tool_calls": [bad]}, {"text": "Started the draft.", "tool_calls": [good]})
    out = await _run(service, "planner.reply", _reply_input("I started the draft"))
    assert [p.update_step.step_id for p in out.patches if p.update_step] == [12]
    second = fake.calls("default-model")[1]["messages"]
    assert second[-1]["role"] == "tool"
    assert "stepId 99 is not a step of task 1" in second[-1]["content"]


async def test_reply_fails_clearly_after_two_invalid_rounds(fake: Fake, service: LlmService) -> None:
    bad = {"name": "remove_step", "arguments": {"taskId": 1, "stepId": 12}}  # not an executor tool
    fake.script("default-model", {"tool_calls": [bad]})
    with pytest.raises(Fatal) as caught:
        await _run(service, "planner.reply", _reply_input("I finished the draft"))
    assert caught.value.error == "llm_output_invalid"


async def test_offline_provider_serves_every_type_deterministically() -> None:
    from worker.settings import WorkerSettings

    offline = LlmService.from_settings(WorkerSettings())
    chat = await _run(offline, "llm.chat", {"messages": [{"role": "user", "content": "ping"}]})
    assert "not a model" in chat.message.content
    assert chat.message.content.endswith("You said: ping")
    assert chat.model == "offline-rules"
    text = "紧急: 本周完成论文。先看文章，然后写开题；最后修改"  # noqa: RUF001
    plan = await _run(offline, "planner.from_text", {"rawText": text, "now": NOW.isoformat()})
    assert plan == await _run(offline, "planner.from_text", {"rawText": text, "now": NOW.isoformat()})
    assert plan.priority == "high"
    assert len(plan.steps) >= 3
    out = await _run(offline, "planner.reply", _reply_input("I finished Write draft"))
    assert (out.agent_name, [p.kind for p in out.patches]) == ("executor", ["update_step"])
    for content, agent in (("give me a summary", "summarizer"), ("please reschedule", "planner")):
        assert (await _run(offline, "planner.reply", _reply_input(content))).agent_name == agent
    glob = await _run(offline, "planner.reply", _reply_input("today?", "global"))
    assert (glob.agent_name, glob.routed_by) == ("global", "session")
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    parsed = await _run(offline, "llm.chat", {"messages": [{"role": "user", "content": "x"}], "responseSchema": schema})
    assert parsed.parsed == {"ok": False}
