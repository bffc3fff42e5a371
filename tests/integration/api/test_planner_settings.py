"""`/api/planner/llm-settings/me` through the real app: the write-only key (encrypted, bound to the user, never
returned), partial updates, clearing, deleting, audit without the key, and the SSRF refusals over HTTP."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from typing import Any

import pytest

from api.planner.crypto import KeyRing
from api.planner.errors import SecretUnavailableError
from tests.integration.api.test_tasks_support import (  # noqa: F401 - fixtures, used by name
    Env,
    assert_error,
    make_env_fixture,
)
from tests.unit.api.planner.test_ssrf import REFUSED

pytestmark = pytest.mark.redis

KEY = secrets.token_bytes(32)
URL = "/api/planner/llm-settings/me"
PUBLIC = "https://api.openai.com/v1"


def _env(make_env: Callable[..., Env], **overrides: object) -> Env:
    key = base64.urlsafe_b64encode(KEY).rstrip(b"=").decode()
    env = make_env(TASKYARD_API_SECRETS_KEY=key, TASKYARD_API_LLM_BASE_URL_ALLOWLIST="127.0.0.1:8089", **overrides)
    env.client.app.state.planner.resolver = _public_resolver  # no DNS in tests
    return env


async def _public_resolver(host: str) -> list[str]:
    names = {"api.openai.com": ["104.18.7.192"], "internal.example": ["10.0.0.1"]}
    if host not in names:
        raise OSError("does not resolve")
    return names[host]


def _stored(env: Env, user_id: str) -> bytes | None:
    rows = env.rows("SELECT api_key_enc FROM planner_llm_settings WHERE user_id = :u", u=user_id)
    value: Any = rows[0][0] if rows else None
    return bytes(value) if value is not None else None


def test_the_key_is_write_only_and_encrypted_for_its_user(make_env: Callable[..., Env]) -> None:
    env = _env(make_env)
    user, other = env.user(), env.user()
    canary = f"sk-{secrets.token_hex(12)}"

    assert env.client.get(URL, headers=user.headers).json() == {"llmSettings": None}
    saved = env.client.put(
        URL, json={"baseUrl": PUBLIC, "apiKey": canary, "model": "gpt-4.1-mini"}, headers=user.headers
    )
    assert saved.status_code == 200, saved.text
    assert saved.json() == {"llmSettings": {"baseUrl": PUBLIC, "model": "gpt-4.1-mini", "hasApiKey": True}}
    assert canary not in saved.text
    assert env.client.get(URL, headers=user.headers).json() == saved.json()
    assert env.client.put(URL, json={"baseUrl": PUBLIC, "apiKey": canary}, headers=other.headers).status_code == 200

    mine, theirs = _stored(env, user.id), _stored(env, other.id)
    assert mine is not None
    assert theirs is not None
    assert canary.encode() not in mine
    assert mine != theirs  # the same key, two users: two ciphertexts
    ring = KeyRing([KEY])
    assert ring.decrypt(user.id, mine) == canary
    with pytest.raises(SecretUnavailableError):
        ring.decrypt(other.id, mine)
    audit = env.rows(
        "SELECT action, details FROM audit_log WHERE actor_id = :u AND target_type = 'llm_settings'", u=user.id
    )
    assert [a for a, _ in audit] == ["llm_settings.update"]
    assert canary not in str(audit)


def test_partial_updates_clearing_and_deleting(make_env: Callable[..., Env]) -> None:
    env = _env(make_env)
    user = env.user()
    assert_error(env.client.put(URL, json={"model": "m"}, headers=user.headers), 422, "validation_error")
    env.client.put(URL, json={"baseUrl": PUBLIC, "apiKey": "sk-one"}, headers=user.headers)
    before = _stored(env, user.id)

    changed = env.client.put(URL, json={"model": "m-2"}, headers=user.headers).json()["llmSettings"]
    assert changed == {"baseUrl": PUBLIC, "model": "m-2", "hasApiKey": True}
    assert _stored(env, user.id) == before  # the key is kept when left out
    cleared = env.client.put(URL, json={"apiKey": None, "model": None}, headers=user.headers).json()["llmSettings"]
    assert cleared == {"baseUrl": PUBLIC, "model": None, "hasApiKey": False}
    assert _stored(env, user.id) is None
    again = env.client.put(URL, json={"apiKey": "sk-two"}, headers=user.headers).json()["llmSettings"]
    assert again["hasApiKey"] is True
    assert env.client.put(URL, json={"apiKey": ""}, headers=user.headers).json()["llmSettings"]["hasApiKey"] is False

    assert env.client.delete(URL, headers=user.headers).status_code == 204
    assert env.client.get(URL, headers=user.headers).json() == {"llmSettings": None}
    assert env.client.delete(URL, headers=user.headers).status_code == 204
    for body in ({"baseUrl": PUBLIC, "apiKey": "x" * 1025}, {"baseUrl": PUBLIC, "secret": 1}, {"baseUrl": 5}):
        assert_error(env.client.put(URL, json=body, headers=user.headers), 422, "validation_error")


@pytest.mark.parametrize("url", [u for u in REFUSED if u])  # "" is the body's length rule: a 422 as well, below
def test_unsafe_base_urls_are_refused_naming_the_field(make_env: Callable[..., Env], url: str) -> None:
    env = _env(make_env)
    user = env.user()

    error = assert_error(env.client.put(URL, json={"baseUrl": url}, headers=user.headers), 422, "validation_error")

    assert error["details"]["field"] == "baseUrl"
    assert env.client.get(URL, headers=user.headers).json() == {"llmSettings": None}


def test_public_and_allow_listed_base_urls_are_accepted(make_env: Callable[..., Env]) -> None:
    env = _env(make_env)
    user = env.user()
    for url in (PUBLIC, "http://127.0.0.1:8089/v1"):
        saved = env.client.put(URL, json={"baseUrl": url}, headers=user.headers)
        assert saved.status_code == 200, saved.text
        assert saved.json()["llmSettings"]["baseUrl"] == url
    for url in ("", "http://internal.example/v1"):
        assert_error(env.client.put(URL, json={"baseUrl": url}, headers=user.headers), 422, "validation_error")


def test_without_a_secrets_key_no_api_key_is_stored(make_env: Callable[..., Env]) -> None:
    env = make_env(APP_ENV="prod", TASKYARD_API_ALLOW_OPEN_REGISTRATION="true")  # prod generates no key itself
    env.client.app.state.planner.resolver = _public_resolver
    user = env.user()

    refused = env.client.put(URL, json={"baseUrl": PUBLIC, "apiKey": "sk-nowhere"}, headers=user.headers)

    assert_error(refused, 503, "service_unavailable")
    assert env.client.get(URL, headers=user.headers).json() == {"llmSettings": None}
    saved = env.client.put(URL, json={"baseUrl": PUBLIC}, headers=user.headers)
    assert saved.json() == {"llmSettings": {"baseUrl": PUBLIC, "model": None, "hasApiKey": False}}
