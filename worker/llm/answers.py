"""One model call whose answer must pass a check: asked once, repaired once (the model is told what was
wrong), then a clear non-retryable error."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from worker.errors import Fatal
from worker.llm.client import ChatAccumulator, ChatRequest
from worker.llm.prompts import REPAIR_PROMPT

if TYPE_CHECKING:
    from collections.abc import Callable

    from worker.llm.provider import LlmService, Provider

__all__ = ("ERROR_OUTPUT_INVALID", "Usage", "ask_checked", "json_format")

T = TypeVar("T")

ERROR_OUTPUT_INVALID = "llm_output_invalid"
"""The model's answer failed validation twice (not retryable: the same prompt would fail the same way)."""
_MAX_PROBLEM_CHARS = 1000


class Usage:
    """Token counts summed over the calls of one task."""

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.total_tokens = 0

    def add(self, acc: ChatAccumulator) -> None:
        self.prompt_tokens += acc.prompt_tokens
        self.completion_tokens += acc.completion_tokens
        self.total_tokens += acc.total_tokens


def json_format(name: str, schema: dict[str, Any], *, strict: bool) -> dict[str, Any]:
    """An OpenAI `response_format` asking for JSON matching `schema`."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": strict}}


async def ask_checked(
    service: LlmService,
    provider: Provider,
    request: ChatRequest,
    check: Callable[[str], T],
    *,
    usage: Usage | None = None,
    answered: ChatAccumulator | None = None,
) -> tuple[T, ChatAccumulator]:
    """Ask, and return `check(answer text)` with the answer; when `check` raises ValueError, ask once more,
    telling the model the problem.

    Args:
        answered: the first answer when the caller already has it (e.g. it was streamed to watchers).

    Raises:
        Fatal: `llm_output_invalid` after the repair also fails the check; provider errors as `LlmService.chat`.
    """
    acc = answered
    if acc is None:
        acc = ChatAccumulator()
        await service.chat(provider, request, acc)
        if usage is not None:
            usage.add(acc)
    try:
        return check(acc.text), acc
    except ValueError as exc:
        problem = str(exc)[:_MAX_PROBLEM_CHARS]
    repair = ChatRequest(
        model=request.model,
        messages=[
            *request.messages,
            {"role": "assistant", "content": acc.text},
            {"role": "user", "content": REPAIR_PROMPT.format(problem=problem)},
        ],
        tools=request.tools,
        response_format=request.response_format,
        temperature=request.temperature,
        max_tokens=request.max_tokens,
    )
    again = ChatAccumulator()
    await service.chat(provider, repair, again)
    if usage is not None:
        usage.add(again)
    try:
        return check(again.text), again
    except ValueError as exc:
        message = f"the model's answer was invalid twice: {str(exc)[:_MAX_PROBLEM_CHARS]}"
        raise Fatal(message, error=ERROR_OUTPUT_INVALID) from None
