"""The fake OpenAI-compatible server on loopback, and an `LlmService` pointed at it (the real SDK over HTTP)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.fakellm import FakeLlmServer
from worker.llm import LlmService
from worker.settings import Secret, WorkerSettings

NOW = dt.datetime(2025, 12, 8, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))


@dataclass
class Fake:
    server: FakeLlmServer

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/v1"

    def script(self, model: str, *steps: dict[str, Any]) -> None:
        from tests.fakellm import Step

        self.server.scripts[model] = [Step.of(s) for s in steps]

    def calls(self, model: str) -> list[dict[str, Any]]:
        return [r for r in self.server.requests if r["model"] == model]

    def settings(self, **overrides: Any) -> WorkerSettings:
        values: dict[str, Any] = {
            "llm_base_url": self.base_url,
            "llm_model": "default-model",
            "llm_api_key": Secret("sk-test-default"),
            "llm_allowed_networks": ("127.0.0.0/8",),
            "llm_stream_batch_ms": 0.0,
        }
        values.update(overrides)
        return WorkerSettings(**values)


@pytest.fixture
async def fake() -> AsyncIterator[Fake]:
    server = FakeLlmServer()
    await server.start()
    try:
        yield Fake(server)
    finally:
        await server.stop()


@pytest.fixture
async def service(fake: Fake) -> AsyncIterator[LlmService]:
    llm = LlmService.from_settings(fake.settings())
    try:
        yield llm
    finally:
        await llm.aclose()


def control(fake: Fake) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{fake.server.port}")
