"""At-rest encryption and sealing of LLM credentials: formats, binding to the user / task, rotation, tampering."""

from __future__ import annotations

import base64
import json
import secrets

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from api.planner.crypto import KeyRing, decode_key, seal_credentials
from api.planner.errors import SecretUnavailableError


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_a_key_round_trips_and_is_bound_to_its_user() -> None:
    ring = KeyRing([secrets.token_bytes(32)])
    blob = ring.encrypt("user-a", "sk-secret")

    assert b"sk-secret" not in blob
    assert ring.decrypt("user-a", blob) == "sk-secret"
    with pytest.raises(SecretUnavailableError):
        ring.decrypt("user-b", blob)  # copied to another user's row, it does not open


def test_the_same_key_encrypts_differently_each_time() -> None:
    ring = KeyRing([secrets.token_bytes(32)])

    assert ring.encrypt("u", "sk-same") != ring.encrypt("u", "sk-same")


def test_any_flipped_byte_fails_and_says_nothing_more() -> None:
    ring = KeyRing([secrets.token_bytes(32)])
    blob = ring.encrypt("u", "sk-secret")
    for index in range(len(blob)):
        broken = bytearray(blob)
        broken[index] ^= 0x01
        with pytest.raises(SecretUnavailableError) as caught:
            ring.decrypt("u", bytes(broken))
        assert "sk-secret" not in str(caught.value)


def test_rotation_new_key_encrypts_old_key_still_decrypts() -> None:
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    before = KeyRing([old]).encrypt("u", "sk-old")
    ring = KeyRing.parse(f"{_b64(new)}, {_b64(old)}")

    assert ring.decrypt("u", before) == "sk-old"
    assert KeyRing([new]).decrypt("u", ring.encrypt("u", "sk-new")) == "sk-new"
    with pytest.raises(SecretUnavailableError):
        KeyRing([new]).decrypt("u", before)  # a key no longer configured


def test_sealed_credentials_follow_the_documented_format() -> None:
    key = secrets.token_bytes(32)
    sealed = seal_credentials(key, "task-1", base_url="https://api.example.com/v1", api_key="sk-x", model=None)

    assert sealed.startswith("v1.")
    assert "=" not in sealed
    blob = base64.urlsafe_b64decode(sealed[3:] + "=" * (-len(sealed[3:]) % 4))
    plain = AESGCM(key).decrypt(blob[:12], blob[12:], b"taskyard/llm-credentials/v1:task-1")
    assert json.loads(plain) == {"baseUrl": "https://api.example.com/v1", "apiKey": "sk-x", "model": None}
    with pytest.raises(Exception):
        AESGCM(key).decrypt(blob[:12], blob[12:], b"taskyard/llm-credentials/v1:task-2")


@pytest.mark.parametrize("text", ["", "abc", _b64(b"x" * 31), _b64(b"x" * 33), "not base64 !"])
def test_malformed_keys_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        decode_key(text)
