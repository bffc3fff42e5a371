"""`llm.chat`: a chat completion streamed to watchers as `task/stream` pieces, the whole answer as the result.

With `responseSchema` the answer is JSON checked against that schema (one repair, see `answers`). A cancel
stops the provider stream at once; the result then keeps the partial answer with `finishReason: canceled`.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

import jsonschema
import msgspec

from protocol.llm import ChatMessage, FinishReason, LlmChatInput, LlmChatOutput, TokenUsage, ToolCall
from worker.errors import Fatal
from worker.llm import offline
from worker.llm.answers import Usage, ask_checked, json_format
from worker.llm.batcher import TokenBatcher
from worker.llm.client import ChatAccumulator, ChatRequest

if TYPE_CHECKING:
    from worker.context import TaskContext
    from worker.llm.provider import LlmService, Provider

__all__ = ("llm_chat", "to_openai_messages")

_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}
_FINISH["content_filter"] = "content_filter"
_WORDS = re.compile(r"\S+\s*|\s+")


def to_openai_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Our camelCase messages as OpenAI Chat Completions messages."""
    out: list[dict[str, Any]] = []
    for m in messages:
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            item["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in m.tool_calls
            ]
        if m.tool_call_id is not None:
            item["tool_call_id"] = m.tool_call_id
        if m.name is not None:
            item["name"] = m.name
        out.append(item)
    return out


def _request(input: LlmChatInput, provider: Provider) -> ChatRequest:
    return ChatRequest(
        model=provider.model,
        messages=to_openai_messages(input.messages),
        tools=[msgspec.to_builtins(t) for t in input.tools] if input.tools else None,
        response_format=json_format("answer", input.response_schema, strict=False) if input.response_schema else None,
        temperature=input.temperature,
        max_tokens=input.max_tokens,
    )


def _schema_check(schema: dict[str, Any]) -> Any:
    validator = jsonschema.Draft202012Validator(schema)

    def check(text: str) -> Any:
        try:
            value = msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            raise ValueError(f"the answer is not JSON ({exc})") from None
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is not None:
            path = "$" + "".join(f"[{p!r}]" for p in error.absolute_path)
            raise ValueError(f"at {path}: {error.message}")
        return value

    return check


def _output(acc: ChatAccumulator, usage: Usage, finish: FinishReason, parsed: Any = None) -> LlmChatOutput:
    calls = [ToolCall(id=i[:128], name=n, arguments=a) for i, n, a in acc.tool_calls() if n]
    return LlmChatOutput(
        message=ChatMessage(role="assistant", content=acc.text or None, tool_calls=calls or None),
        finish_reason=finish,
        model=acc.model,
        usage=TokenUsage(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
        ),
        parsed=parsed,
    )


async def _offline_answer(input: LlmChatInput, acc: ChatAccumulator, model: str) -> None:
    acc.model = model
    text = offline.chat_text(to_openai_messages(input.messages), input.response_schema)
    for word in _WORDS.findall(text):  # streamed word by word, like a model would
        acc.text_parts.append(word)
        if acc.on_text is not None:
            await acc.on_text(word)
    acc.finish_reason = "stop"


async def llm_chat(service: LlmService, input: LlmChatInput, ctx: TaskContext[Any]) -> LlmChatOutput:
    """Run one chat; see the module docstring."""
    if input.response_schema is not None:
        try:
            jsonschema.Draft202012Validator.check_schema(input.response_schema)
        except jsonschema.exceptions.SchemaError as exc:
            raise Fatal(f"responseSchema is not a valid JSON Schema: {exc.message}", error="validation_error") from None
    provider = service.provider(ctx, model=input.model)
    batcher = TokenBatcher(ctx, service.batch_s)
    acc = ChatAccumulator(on_text=batcher.push)
    usage = Usage()
    try:
        if provider.offline:
            await _offline_answer(input, acc, provider.model)
        else:
            await service.chat(provider, _request(input, provider), acc)
            usage.add(acc)
        await batcher.close()
    except asyncio.CancelledError:
        if not ctx.cancelled:
            raise
        await batcher.discard()
        if not usage.total_tokens:
            usage.add(acc)  # whatever the provider counted before the cut (usually nothing yet)
        return _output(acc, usage, "canceled")
    parsed = None
    if input.response_schema is not None:
        check = _schema_check(input.response_schema)
        if provider.offline:
            try:
                parsed = check(acc.text)
            except ValueError as exc:
                raise Fatal(
                    f"the offline provider cannot answer this schema: {exc}", error="llm_output_invalid"
                ) from None
        else:
            # A repaired answer is only in the result: watchers saw the first one streamed.
            parsed, acc = await ask_checked(
                service, provider, _request(input, provider), check, usage=usage, answered=acc
            )
    return _output(acc, usage, _FINISH.get(acc.finish_reason or "stop", "stop"), parsed)
