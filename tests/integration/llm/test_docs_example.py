"""The SDK example of docs/llm.md (docs/examples/llm_agent.py) runs as documented, against the fake server."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.integration.llm.conftest import Fake
from worker import run_handler
from worker.llm import LlmService
from worker.registry import load_registry

EXAMPLE = Path(__file__).resolve().parents[3] / "docs" / "examples" / "llm_agent.py"


def _example():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("llm_agent", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_translate_example_streams_and_returns_the_answer(fake: Fake, service: LlmService) -> None:
    fake.script("default-model", {"tokens": ["Bon", "jour", " le ", "monde"]})
    registry = _example().make_registry(service)
    spec = registry.get("translate")
    assert spec is not None
    run = await run_handler(spec, {"text": "hello world"})
    (call,) = fake.calls("default-model")
    prompt_words = sum(len(m["content"].split()) for m in call["messages"])  # how the fake counts tokens
    assert run.output == {"text": "Bonjour le monde", "usage": prompt_words + 4}
    assert [p.delta for p in run.stream_pieces] == ["Bon", "jour", " le ", "monde"]
    assert "French" in call["messages"][0]["content"]


def test_the_example_loads_as_a_handlers_reference(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))
    registry = load_registry("llm_agent:make_registry")
    assert registry.types == ("translate",)


def test_docs_name_every_tool_and_every_argument() -> None:
    from worker.llm.tools import PATCH_TOOLS

    text = (EXAMPLE.parents[1] / "llm.md").read_text()
    for name, tool in PATCH_TOOLS.items():
        assert f"`{name}`" in text
        properties = tool["parameters"]["properties"]
        for argument, schema in properties.items():
            assert f"`{argument}`" in text, (name, argument)
            for field in schema.get("properties", {}):
                assert f"`{field}`" in text, (name, argument, field)
