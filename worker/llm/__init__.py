"""taskyard's built-in LLM agents: `llm.chat`, `planner.from_text` and `planner.reply`, on any OpenAI-compatible
provider (or the deterministic `offline` one). Tasks of these types need an agent with the capability `llm`.

Use them in your own worker::

    service = LlmService.from_settings(settings)
    registry.include(llm_registry(service))
    ...
    await service.aclose()  # at shutdown
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from protocol.llm import LLM_CHAT, LlmChatInput, LlmChatOutput
from protocol.planner import (
    PLANNER_FROM_TEXT,
    PLANNER_REPLY,
    PlanFromTextInput,
    PlanFromTextOutput,
    PlannerReplyInput,
    PlannerReplyOutput,
)
from worker.llm.chat import llm_chat
from worker.llm.client import ChatAccumulator, ChatRequest
from worker.llm.planning import plan_from_text
from worker.llm.provider import OFFLINE, LlmService, Provider
from worker.llm.reply import planner_reply
from worker.registry import Registry

if TYPE_CHECKING:
    from worker.context import TaskContext

__all__ = (
    "LLM_CAPABILITY",
    "OFFLINE",
    "ChatAccumulator",
    "ChatRequest",
    "LlmService",
    "Provider",
    "llm_registry",
)

LLM_CAPABILITY = "llm"
"""The agent capability tasks of the built-in LLM types ask for."""


def llm_registry(service: LlmService) -> Registry[Any]:
    """A registry with the three built-in LLM types, all served by `service`."""
    registry: Registry[Any] = Registry()

    async def chat(input: LlmChatInput, ctx: TaskContext[Any]) -> LlmChatOutput:
        return await llm_chat(service, input, ctx)

    async def from_text(input: PlanFromTextInput, ctx: TaskContext[Any]) -> PlanFromTextOutput:
        return await plan_from_text(service, input, ctx)

    async def reply(input: PlannerReplyInput, ctx: TaskContext[Any]) -> PlannerReplyOutput:
        return await planner_reply(service, input, ctx)

    registry.register(LLM_CHAT, chat, input_type=LlmChatInput)
    registry.register(PLANNER_FROM_TEXT, from_text, input_type=PlanFromTextInput)
    registry.register(PLANNER_REPLY, reply, input_type=PlannerReplyInput)
    return registry
