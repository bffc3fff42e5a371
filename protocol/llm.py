"""Input and output of the built-in `llm.chat` task type: the contract between submitters and our LLM workers.

Shapes follow the OpenAI Chat Completions API (camelCase on the wire) so any OpenAI-compatible provider fits.
The worker streams the answer's text as `task/stream` pieces while it is written; the result holds the whole
answer, so a watcher that missed pieces (the replay history is bounded) still gets everything at the end.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

__all__ = (
    "LLM_CHAT",
    "MAX_CHAT_MESSAGES",
    "MAX_CHAT_TEXT",
    "ChatMessage",
    "ChatRole",
    "FinishReason",
    "LlmChatInput",
    "LlmChatOutput",
    "TokenUsage",
    "ToolCall",
    "ToolFunction",
    "ToolSpec",
)

LLM_CHAT = "llm.chat"
"""The task type."""
MAX_CHAT_MESSAGES = 200
"""Most messages in one chat input."""
MAX_CHAT_TEXT = 100_000
"""Longest content of one message, in characters (the task input's byte limit applies too)."""

ChatRole = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "canceled"]
"""Why the answer ended; `canceled` means the task was canceled mid-stream (the output is partial)."""

_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
_Text = Annotated[str, msgspec.Meta(max_length=MAX_CHAT_TEXT)]


class _Wire(msgspec.Struct, rename="camel", forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """camelCase, strict, defaults left out."""


class ToolCall(_Wire, kw_only=True):
    """A function call the model asked for."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    name: _Name
    arguments: _Text
    """The arguments as JSON text, exactly as the model wrote them."""


class ChatMessage(_Wire, kw_only=True):
    """One message of the conversation."""

    role: ChatRole
    content: _Text | None = None
    tool_calls: Annotated[list[ToolCall], msgspec.Meta(max_length=64)] | None = None
    """Assistant messages: the calls the model made."""
    tool_call_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    """Tool messages: which call this answers."""
    name: _Name | None = None


class ToolFunction(_Wire, kw_only=True):
    """A function the model may call."""

    name: _Name
    description: Annotated[str, msgspec.Meta(max_length=4000)] | None = None
    parameters: dict[str, Any]
    """JSON Schema of the arguments."""


class ToolSpec(_Wire, kw_only=True):
    """A tool in the OpenAI `tools` list (functions only)."""

    type: Literal["function"] = "function"
    function: ToolFunction


class LlmChatInput(_Wire, kw_only=True):
    """`llm.chat` input."""

    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1, max_length=MAX_CHAT_MESSAGES)]
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    """Overrides the model of the provider settings."""
    tools: Annotated[list[ToolSpec], msgspec.Meta(max_length=64)] | None = None
    response_schema: dict[str, Any] | None = None
    """Ask for a JSON answer matching this JSON Schema (structured output); the worker validates it."""
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None


class TokenUsage(_Wire, kw_only=True):
    """Tokens the provider counted (zero where it did not say)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class LlmChatOutput(_Wire, kw_only=True):
    """`llm.chat` result: the whole answer (also when canceled: then partial, `finishReason: canceled`)."""

    message: ChatMessage
    """The assistant message: its text and the tool calls the model made."""
    finish_reason: FinishReason
    model: str
    """The model that answered, as the provider named it."""
    usage: TokenUsage = msgspec.field(default_factory=TokenUsage)
    parsed: Any = None
    """With `responseSchema`: the decoded, validated JSON answer."""
