"""Your own LLM agent with the worker SDK: a `translate` task type streaming its answer token by token.

Run it (with the built-in types too) on a worker whose agent has the `llm` capability:

    TASKYARD_WORKER_LLM_BASE_URL=https://api.openai.com/v1 TASKYARD_WORKER_LLM_MODEL=gpt-4.1-mini \\
    TASKYARD_WORKER_LLM_API_KEY=sk-... PYTHONPATH=docs/examples \\
      .venv/bin/taskyard worker --handlers llm_agent:make_registry
"""

from __future__ import annotations

import os
from typing import Any

import msgspec

from worker import Registry, TaskContext, load_settings
from worker.llm import ChatAccumulator, ChatRequest, LlmService


class TranslateInput(msgspec.Struct, forbid_unknown_fields=True):
    text: str
    to: str = "French"


def make_registry(service: LlmService | None = None) -> Registry[Any]:
    """The registry `--handlers llm_agent:make_registry` loads (the service from TASKYARD_WORKER_LLM_*)."""
    llm = service or LlmService.from_settings(load_settings(os.environ, require_credentials=False))
    registry: Registry[Any] = Registry()

    @registry.handler("translate", input_type=TranslateInput)
    async def translate(input: TranslateInput, ctx: TaskContext[Any]) -> dict[str, Any]:
        provider = llm.provider(ctx)  # the task owner's sealed settings, else the worker's default
        request = ChatRequest(
            model=provider.model,
            messages=[
                {"role": "system", "content": f"Translate the user's text into {input.to}. Answer with it only."},
                {"role": "user", "content": input.text},
            ],
        )
        answer = ChatAccumulator(on_text=ctx.stream)  # every token reaches watchers as `task/stream`
        await llm.chat(provider, request, answer)  # provider errors raise Retry / Fatal with clear codes
        return {"text": answer.text, "usage": answer.total_tokens}

    return registry
