"""`planner.reply`: route the user's message to an agent, and let it answer with a message plus task patches
made through tool calls (`worker.llm.tools`). A tool call that is not a valid patch is answered with the
problem and the model tries once more; a second invalid round fails the task (`llm_output_invalid`).

The answer's text streams to watchers as `task/stream` pieces while the model writes it (the planner forwards
them to the session's watchers). A round the model has to redo streams again: as with `llm.chat`'s repaired
answers, the result holds the final message, which watchers may have seen preceded by an earlier attempt."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import msgspec

from protocol.planner import AgentName, PlannerReplyInput, PlannerReplyOutput, TaskPatch, TaskState
from worker.errors import Fatal
from worker.llm import offline
from worker.llm.answers import ERROR_OUTPUT_INVALID, ask_checked, json_format
from worker.llm.batcher import TokenBatcher
from worker.llm.client import ChatAccumulator, ChatRequest
from worker.llm.prompts import AGENT_PROMPTS, ROUTER_PROMPT
from worker.llm.router import Route, keyword_route
from worker.llm.tools import ToolCallError, patch_from_call, tool_specs

if TYPE_CHECKING:
    from worker.context import TaskContext
    from worker.llm.provider import LlmService, Provider

__all__ = ("AGENT_TOOLS", "planner_reply")

AGENT_TOOLS: dict[AgentName, tuple[str, ...]] = {
    "executor": ("update_step",),
    "planner": ("update_step", "add_step", "remove_step", "reorder_steps", "update_task"),
    "summarizer": (),
    "global": ("update_task", "update_step"),
}
"""The patch kinds each agent may make (its tools)."""
_MAX_ROUNDS = 4
_MAX_PATCHES = 50
_MAX_CONTENT = 20_000


class _RouterAnswer(msgspec.Struct, forbid_unknown_fields=True):
    agent: Literal["executor", "planner", "summarizer"]


_ROUTER_SCHEMA = {
    "type": "object",
    "properties": {"agent": {"type": "string", "enum": ["executor", "planner", "summarizer"]}},
    "required": ["agent"],
    "additionalProperties": False,
}


def _router_check(text: str) -> _RouterAnswer:
    try:
        return msgspec.json.decode(text, type=_RouterAnswer)
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)) from None


async def _model_route(service: LlmService, provider: Provider, input: PlannerReplyInput) -> Route:
    request = ChatRequest(
        model=provider.model,
        messages=[{"role": "system", "content": ROUTER_PROMPT}, {"role": "user", "content": input.content}],
        response_format=json_format("route", _ROUTER_SCHEMA, strict=True),
    )
    answer, _ = await ask_checked(service, provider, request, _router_check)
    return (answer.agent, "model")


def _shown(input: PlannerReplyInput) -> list[TaskState]:
    return [input.task] if input.task is not None else list(input.tasks)


def _messages(input: PlannerReplyInput, agent: AgentName) -> list[dict[str, Any]]:
    context = msgspec.json.encode(input.task if input.task is not None else input.tasks).decode()
    system = AGENT_PROMPTS[agent].format(now=input.now.isoformat(), timezone=input.timezone, context=context)
    history = [{"role": m.role, "content": m.content} for m in input.messages if m.role in ("user", "assistant")]
    return [{"role": "system", "content": system}, *history, {"role": "user", "content": input.content}]


async def _streamed_round(
    service: LlmService, provider: Provider, request: ChatRequest, ctx: TaskContext[Any]
) -> ChatAccumulator:
    """One chat call whose text goes out as `task/stream` pieces as it arrives."""
    batcher = TokenBatcher(ctx, service.batch_s)
    acc = ChatAccumulator(on_text=batcher.push)
    try:
        await service.chat(provider, request, acc)
    except BaseException:
        await batcher.discard()
        raise
    await batcher.close()
    return acc


async def _agent_answer(
    service: LlmService, provider: Provider, input: PlannerReplyInput, agent: AgentName, ctx: TaskContext[Any]
) -> tuple[str, list[TaskPatch]]:
    allowed = AGENT_TOOLS[agent]
    messages = _messages(input, agent)
    patches: list[TaskPatch] = []
    repairs = 0
    for _ in range(_MAX_ROUNDS):
        request = ChatRequest(model=provider.model, messages=messages, tools=tool_specs(allowed) or None)
        acc = await _streamed_round(service, provider, request, ctx)
        calls = acc.tool_calls()
        results: list[dict[str, Any]] = []
        problems = 0
        for call_id, name, arguments in calls:
            try:
                patches.append(patch_from_call(name, arguments, _shown(input), allowed))
                results.append({"role": "tool", "tool_call_id": call_id, "content": "ok: recorded"})
            except ToolCallError as exc:
                problems += 1
                results.append({"role": "tool", "tool_call_id": call_id, "content": f"error: {exc}; call again"})
        text = acc.text.strip()
        if problems == 0 and text:
            return text[:_MAX_CONTENT], patches[:_MAX_PATCHES]
        if problems or (not calls and not text):
            repairs += 1
            if repairs > 1:
                raise Fatal("the model's tool calls or message were invalid twice", error=ERROR_OUTPUT_INVALID)
        assistant: dict[str, Any] = {"role": "assistant", "content": acc.text or None}
        if calls:
            assistant["tool_calls"] = [
                {"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in calls
            ]
        messages = [*messages, assistant, *results]
        if not calls:
            messages.append({"role": "user", "content": "Answer the user with a message."})
    raise Fatal("the model gave no message", error=ERROR_OUTPUT_INVALID)


async def _route(service: LlmService, provider: Provider, input: PlannerReplyInput) -> Route:
    route = keyword_route(input)
    if route is not None:
        return route
    if provider.offline:
        return ("executor", "keywords")  # no model to ask: the default agent
    return await _model_route(service, provider, input)  # unsure: the model decides


async def planner_reply(service: LlmService, input: PlannerReplyInput, ctx: TaskContext[Any]) -> PlannerReplyOutput:
    """Route, then answer with the chosen agent."""
    provider = service.provider(ctx)
    agent, routed_by = await _route(service, provider, input)
    if provider.offline:
        content, patches = offline.reply(input, agent)
        if content:
            await ctx.stream(content)  # one piece: the offline rules write it at once
    else:
        content, patches = await _agent_answer(service, provider, input, agent, ctx)
    return PlannerReplyOutput(agent_name=agent, content=content, patches=patches, routed_by=routed_by)
