"""AES-256-GCM for the planner's two secrets: users' LLM API keys at rest, and credentials sealed for agents.

At rest: `0x01 || key id (4) || nonce (12) || ciphertext+tag`, the user id as associated data, so a ciphertext
copied to another user's row does not decrypt. Several keys may be configured: the first encrypts, any
decrypts (rotation). Sealed for a trusted agent (the format our LLM workers unseal, docs/planner.md):
`"v1." + base64url_nopad(nonce (12) || AESGCM(key).encrypt(nonce, json, b"taskyard/llm-credentials/v1:" + task id))`.
Never logs or returns a plaintext; failures say only that a secret is unavailable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from api.planner.errors import SecretUnavailableError

__all__ = ("AT_REST_AAD_PREFIX", "SEAL_AAD_PREFIX", "SEAL_VERSION", "KeyRing", "decode_key", "seal_credentials")

AT_REST_AAD_PREFIX = b"taskyard/llm-api-key/v1:"
SEAL_AAD_PREFIX = b"taskyard/llm-credentials/v1:"
SEAL_VERSION = "v1."
_BLOB_VERSION = b"\x01"
_NONCE_BYTES = 12
_KEY_ID_BYTES = 4


def decode_key(text: str) -> bytes:
    """32 bytes from base64url without padding (settings already checked the shape)."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, binascii.Error) as exc:
        raise ValueError("a key must be base64url") from exc
    if len(raw) != 32:
        raise ValueError("a key must be 32 bytes")
    return raw


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class KeyRing:
    """Encrypts with the first key, decrypts with whichever key made the blob."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("at least one key")
        self._ciphers = [(hashlib.sha256(key).digest()[:_KEY_ID_BYTES], AESGCM(key)) for key in keys]

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        """From the setting's text: comma-separated base64url keys."""
        return cls([decode_key(part.strip()) for part in text.split(",") if part.strip()])

    def encrypt(self, user_id: str, plaintext: str) -> bytes:
        key_id, cipher = self._ciphers[0]
        nonce = os.urandom(_NONCE_BYTES)
        sealed = cipher.encrypt(nonce, plaintext.encode(), AT_REST_AAD_PREFIX + user_id.encode())
        return _BLOB_VERSION + key_id + nonce + sealed

    def decrypt(self, user_id: str, blob: bytes) -> str:
        """The plaintext, or `SecretUnavailableError` (unknown key, tampered, or another user's blob)."""
        if len(blob) < 1 + _KEY_ID_BYTES + _NONCE_BYTES + 16 or blob[:1] != _BLOB_VERSION:
            raise SecretUnavailableError()
        key_id, nonce, sealed = blob[1:5], blob[5:17], blob[17:]
        for candidate_id, cipher in self._ciphers:
            if candidate_id != key_id:
                continue
            try:
                return cipher.decrypt(nonce, sealed, AT_REST_AAD_PREFIX + user_id.encode()).decode()
            except (InvalidTag, UnicodeDecodeError) as exc:
                raise SecretUnavailableError() from exc
        raise SecretUnavailableError()


class _Credentials(msgspec.Struct, rename="camel"):
    """The sealed plaintext; every key is always present (null when unset)."""

    base_url: str
    api_key: str | None
    model: str | None


def seal_credentials(key: bytes, task_id: str, *, base_url: str, api_key: str | None, model: str | None) -> str:
    """Seal an owner's LLM settings for one task (bound to its id: a sealed value replayed on another task fails)."""
    plaintext = msgspec.json.encode(_Credentials(base_url=base_url, api_key=api_key, model=model))
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext, SEAL_AAD_PREFIX + task_id.encode())
    return SEAL_VERSION + _b64(nonce + sealed)
