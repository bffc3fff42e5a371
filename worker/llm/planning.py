"""`planner.from_text`: free text (Chinese, English, ...) -> a validated plan, through a JSON-schema answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from protocol.planner import PlanFromTextInput, PlanFromTextOutput
from worker.llm import offline
from worker.llm.answers import ask_checked, json_format
from worker.llm.client import ChatRequest
from worker.llm.prompts import PLAN_PROMPT

if TYPE_CHECKING:
    from worker.context import TaskContext
    from worker.llm.provider import LlmService

__all__ = ("PLAN_SCHEMA", "plan_from_text")

_TIME = {"type": ["string", "null"], "description": "RFC 3339 with an offset, or null"}
PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": 200},
        "description": {"type": "string", "maxLength": 4000},
        "priority": {"type": "string", "enum": ["low", "medium", "high"]},
        "dueAt": _TIME,
        "steps": {
            "type": "array",
            "minItems": 1,
            "maxItems": 50,
            "items": {
                "type": "object",
                "properties": {
                    "title": {"type": "string", "minLength": 1, "maxLength": 200},
                    "detail": {"type": "string", "maxLength": 4000},
                    "estimateMinutes": {"type": ["integer", "null"], "minimum": 1},
                    "plannedStart": _TIME,
                    "plannedEnd": _TIME,
                },
                "required": ["title", "detail", "estimateMinutes", "plannedStart", "plannedEnd"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["title", "description", "priority", "dueAt", "steps"],
    "additionalProperties": False,
}
"""What the model is asked to answer (OpenAI strict mode); the answer is then decoded as `PlanFromTextOutput`."""

_DECODER = msgspec.json.Decoder(PlanFromTextOutput)


def _check(text: str) -> PlanFromTextOutput:
    try:
        return _DECODER.decode(text)
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)) from None


async def plan_from_text(service: LlmService, input: PlanFromTextInput, ctx: TaskContext[Any]) -> PlanFromTextOutput:
    """Ask the model for a plan; one repair when the answer does not validate."""
    provider = service.provider(ctx)
    if provider.offline:
        return offline.plan(input)
    prompt = PLAN_PROMPT.format(now=input.now.isoformat(), timezone=input.timezone)
    request = ChatRequest(
        model=provider.model,
        messages=[{"role": "system", "content": prompt}, {"role": "user", "content": input.raw_text}],
        response_format=json_format("plan", PLAN_SCHEMA, strict=True),
    )
    plan, _ = await ask_checked(service, provider, request, _check)
    return plan
