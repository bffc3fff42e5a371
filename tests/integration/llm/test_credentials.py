"""Sealed per-user provider settings: the format, tamper and key checks, and a task using them for real."""

from __future__ import annotations

import base64
import logging
import os

import pytest

from tests.integration.llm.conftest import Fake
from worker import Fatal, Registry
from worker.llm import LlmService, llm_registry
from worker.llm.credentials import CredentialsError, SealedSettings, decode_key, seal, unseal
from worker.settings import Secret
from worker.testing import run_handler

KEY = os.urandom(32)
KEY_B64 = base64.urlsafe_b64encode(KEY).rstrip(b"=").decode()
CANARY = "sk-canary-7c1f0e"


def test_seal_then_unseal_round_trips_and_is_bound_to_the_task() -> None:
    settings = SealedSettings(base_url="https://llm.example/v1", api_key=CANARY, model="m")
    blob = seal(KEY, "task-1", settings)
    assert blob.startswith("v1.")
    assert "=" not in blob
    assert unseal(KEY, "task-1", blob) == settings
    assert seal(KEY, "task-1", settings) != blob  # a fresh nonce each time
    with pytest.raises(CredentialsError):
        unseal(KEY, "task-2", blob)  # copied onto another task
    with pytest.raises(CredentialsError):
        unseal(os.urandom(32), "task-1", blob)
    with pytest.raises(CredentialsError):
        unseal(None, "task-1", blob)
    tampered = blob[:-2] + ("A" if blob[-2] != "A" else "B") + blob[-1]
    with pytest.raises(CredentialsError) as caught:
        unseal(KEY, "task-1", tampered)
    assert CANARY not in str(caught.value)
    assert CANARY not in repr(settings)
    assert decode_key(KEY_B64) == KEY


async def _chat_with(service: LlmService, credentials: str, task_id: str = "task-9") -> object:
    registry: Registry[object] = llm_registry(service)
    spec = registry.get("llm.chat")
    assert spec is not None
    body = {"messages": [{"role": "user", "content": "hi"}]}
    return (await run_handler(spec, body, task_id=task_id, credentials=credentials)).output


async def test_a_task_with_sealed_settings_uses_them(fake: Fake, caplog: pytest.LogCaptureFixture) -> None:
    service = LlmService.from_settings(fake.settings(llm_seal_key=Secret(KEY_B64)))
    caplog.set_level(logging.DEBUG)
    try:
        blob = seal(KEY, "task-9", SealedSettings(base_url=fake.base_url, api_key=CANARY, model="user-model"))
        fake.script("user-model", {"text": "from the user's provider"})
        output = await _chat_with(service, blob)
        assert output.message.content == "from the user's provider"  # type: ignore[attr-defined]
        (call,) = fake.calls("user-model")
        assert call["authorization"] == f"Bearer {CANARY}"
        with pytest.raises(Fatal) as caught:
            await _chat_with(service, blob[:-3] + "xyz")
        assert caught.value.error == "llm_key_unavailable"
        assert CANARY not in caught.value.message
    finally:
        await service.aclose()
    assert CANARY not in caplog.text
