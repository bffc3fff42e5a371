"""`llm.chat` through the real openai SDK against the fake server: streaming, tool calls, JSON answers with one
repair, and each provider failure mapped to the right retry or failure."""

from __future__ import annotations

from typing import Any

import pytest

from protocol.llm import LlmChatOutput
from tests.integration.llm.conftest import Fake
from worker import Fatal, Retry, run_handler
from worker.llm import LlmService, llm_registry


async def _chat(service: LlmService, **input: Any) -> Any:
    spec = llm_registry(service).get("llm.chat")
    assert spec is not None
    body = {"messages": [{"role": "user", "content": "hello there"}], **input}
    return await run_handler(spec, body)


async def test_tokens_are_streamed_in_order_and_the_result_is_their_concatenation(
    fake: Fake, service: LlmService
) -> None:
    fake.script("m", {"tokens": ["Hel", "lo", ", ", "世界", "!"]})
    run = await _chat(service, model="m")
    output: LlmChatOutput = run.output
    assert output.message.content == "Hello, 世界!"
    assert run.stream == "Hello, 世界!"
    assert [p.delta for p in run.stream_pieces] == ["Hel", "lo", ", ", "世界", "!"]
    assert [p.offset for p in run.stream_pieces] == [0, 3, 5, 7, 13]
    assert (output.finish_reason, output.model) == ("stop", "m")
    assert output.usage.completion_tokens == 5
    assert output.usage.prompt_tokens == 2
    assert output.usage.total_tokens == 7
    (call,) = fake.calls("m")
    assert call["stream"] is True
    assert call["authorization"] == "Bearer sk-test-default"


async def test_tool_calls_are_assembled_from_fragments(fake: Fake, service: LlmService) -> None:
    fake.script("m", {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]})
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    run = await _chat(service, model="m", tools=tools)
    output: LlmChatOutput = run.output
    assert output.finish_reason == "tool_calls"
    assert output.message.tool_calls is not None
    (call,) = output.message.tool_calls
    assert (call.name, call.arguments) == ("get_weather", '{"city": "Oslo"}')
    assert fake.calls("m")[0]["tools"][0]["function"]["name"] == "get_weather"


_SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}


async def test_json_answer_is_validated_and_an_invalid_one_repaired_once(fake: Fake, service: LlmService) -> None:
    fake.script("m", {"text": '{"n": "seven"}'}, {"text": '{"n": 7}'})
    run = await _chat(service, model="m", responseSchema=_SCHEMA)
    assert run.output.parsed == {"n": 7}
    assert run.output.message.content == '{"n": 7}'
    first, repair = fake.calls("m")
    assert first["responseFormat"]["json_schema"]["schema"] == _SCHEMA
    assert "not valid" in repair["messages"][-1]["content"]
    assert "'seven' is not of type 'integer'" in repair["messages"][-1]["content"]
    assert repair["messages"][-2] == {"role": "assistant", "content": '{"n": "seven"}'}


async def test_a_second_invalid_json_answer_is_a_clear_error(fake: Fake, service: LlmService) -> None:
    fake.script("m", {"text": "not json"}, {"text": '{"m": 1}'})
    with pytest.raises(Fatal) as caught:
        await _chat(service, model="m", responseSchema=_SCHEMA)
    assert caught.value.error == "llm_output_invalid"
    assert len(fake.calls("m")) == 2


@pytest.mark.parametrize(
    ("step", "kind", "error", "delay_s"),
    [
        ({"status": 401}, Fatal, "llm_auth_failed", None),
        ({"status": 403}, Fatal, "llm_auth_failed", None),
        ({"status": 429, "headers": {"retry-after": "7"}}, Retry, "llm_rate_limited", 7.0),
        ({"status": 429, "headers": {"retry-after-ms": "1500"}}, Retry, "llm_rate_limited", 1.5),
        ({"status": 500}, Retry, "llm_unavailable", None),
        ({"status": 503}, Retry, "llm_unavailable", None),
        ({"status": 400}, Fatal, "llm_bad_request", None),
        ({"status": 302, "headers": {"location": "http://169.254.169.254/"}}, Fatal, "upstream_redirect_blocked", None),
        ({"tokens": ["a", "b", "c", "d"], "cut_after": 2}, Retry, "llm_stream_dropped", None),
    ],
)
async def test_provider_failures_become_the_right_outcome(
    fake: Fake, service: LlmService, step: dict[str, Any], kind: type[Exception], error: str, delay_s: float | None
) -> None:
    fake.script("m", step)
    with pytest.raises(kind) as caught:
        await _chat(service, model="m")
    assert caught.value.error == error  # type: ignore[attr-defined]
    if kind is Retry:
        assert caught.value.delay_s == delay_s  # type: ignore[attr-defined]
    assert len(fake.calls("m")) == 1  # the SDK does not retry on its own
    assert "scripted" not in str(caught.value)  # the provider's body is never quoted


async def test_timeout_is_retried(fake: Fake) -> None:
    fake.script("m", {"tokens": ["a", "b"], "token_delay_ms": 1500})
    slow = LlmService.from_settings(fake.settings(llm_read_timeout_s=0.3))
    try:
        with pytest.raises(Retry) as caught:
            await _chat(slow, model="m")
    finally:
        await slow.aclose()
    assert caught.value.error == "llm_timeout"


async def test_private_addresses_are_refused_at_connect_unless_allowed(fake: Fake) -> None:
    guarded = LlmService.from_settings(fake.settings(llm_allowed_networks=()))
    try:
        with pytest.raises(Fatal) as caught:
            await _chat(guarded, model="m")
    finally:
        await guarded.aclose()
    assert caught.value.error == "ssrf_blocked"
    assert fake.calls("m") == []  # nothing reached the server


async def test_one_client_per_base_url_and_key_is_shared(fake: Fake, service: LlmService) -> None:
    pool = service._pool  # the shared pool is what is under test here
    first = pool.client(fake.base_url, "k1")
    assert pool.client(fake.base_url, "k1") is first
    assert pool.client(fake.base_url, "k2") is not first
