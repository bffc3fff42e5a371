"""Sealed per-user provider settings (`task/submit` `credentials`): open them with the key shared with the API.

Format, shared with the API that seals them (`TASKYARD_API_LLM_SEAL_KEY` there, `TASKYARD_WORKER_LLM_SEAL_KEY`
here)::

    "v1." + base64url_nopad(nonce[12] || AESGCM(key).encrypt(nonce, plaintext, aad))
    aad = b"taskyard/llm-credentials/v1:" + task_id.encode()
    plaintext = JSON {"baseUrl": str, "apiKey": str | null, "model": str | null}

Binding the task id as associated data means a blob copied onto another task does not open. Nothing here
ever puts the key or the plaintext in an exception message or a log line.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Annotated

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ("SEAL_PREFIX", "CredentialsError", "SealedSettings", "decode_key", "seal", "unseal")

SEAL_PREFIX = "v1."
_AAD_PREFIX = b"taskyard/llm-credentials/v1:"
_NONCE_BYTES = 12
_KEY_BYTES = 32


class CredentialsError(Exception):
    """The blob cannot be opened (no key, wrong key, tampered, another task's, malformed). No detail inside."""


class SealedSettings(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """What a sealed blob holds: one user's provider settings."""

    base_url: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    """An OpenAI-compatible base URL, or `offline`."""
    api_key: Annotated[str, msgspec.Meta(max_length=4000)] | None = None
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None

    def __repr__(self) -> str:  # the key must not reach a log through a repr
        key = "'***'" if self.api_key else None
        return f"SealedSettings(base_url={self.base_url!r}, api_key={key}, model={self.model!r})"


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def decode_key(key_b64: str) -> bytes:
    """The 32-byte key from its base64url (no padding) form.

    Raises:
        CredentialsError: not base64url, or not 32 bytes.
    """
    try:
        key = _b64decode(key_b64.strip())
    except (ValueError, binascii.Error) as exc:
        raise CredentialsError("the seal key is not base64url") from exc
    if len(key) != _KEY_BYTES:
        raise CredentialsError("the seal key is not 32 bytes")
    return key


def _aad(task_id: str) -> bytes:
    return _AAD_PREFIX + task_id.encode()


def seal(key: bytes, task_id: str, settings: SealedSettings) -> str:
    """Seal `settings` for `task_id` (what the API does; here for tests and tools)."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, msgspec.json.encode(settings), _aad(task_id))
    return SEAL_PREFIX + base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()


def unseal(key: bytes | None, task_id: str, blob: str) -> SealedSettings:
    """Open a blob sealed for `task_id`.

    Raises:
        CredentialsError: no key, or the blob is malformed, tampered, sealed with another key or for another task.
    """
    if not key:
        raise CredentialsError("no seal key is configured on this worker")
    if not blob.startswith(SEAL_PREFIX):
        raise CredentialsError("unknown sealed-credentials format")
    try:
        raw = _b64decode(blob.removeprefix(SEAL_PREFIX))
    except (ValueError, binascii.Error) as exc:
        raise CredentialsError("sealed credentials are not base64url") from exc
    if len(raw) <= _NONCE_BYTES:
        raise CredentialsError("sealed credentials are truncated")
    try:
        plaintext = AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad(task_id))
    except (InvalidTag, ValueError) as exc:
        raise CredentialsError("sealed credentials do not open with this key for this task") from exc
    try:
        return msgspec.json.decode(plaintext, type=SealedSettings)
    except msgspec.DecodeError:
        # `from None`: a decode error message could quote the plaintext (the key).
        raise CredentialsError("sealed credentials hold no valid provider settings") from None
