"""The planner's failures, each a catalogue entry rendered by api/errors.py's one handler.

ApiError
 +-- UpstreamFailedError      502 upstream_error    the LLM task failed (or its answer was unusable)
 +-- PlannerTimeoutError      504 gateway_timeout   past the wait bound; `details` say where the result will be
SecretUnavailableError                              a stored or sealed secret cannot be decrypted (never says why)
"""

from __future__ import annotations

from typing import Any

from api.errors import ApiError
from protocol.errors import ErrorCode

__all__ = ("PlannerTimeoutError", "SecretUnavailableError", "UpstreamFailedError")


class UpstreamFailedError(ApiError):
    """The LLM work ended without a usable answer."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(ErrorCode.UPSTREAM_ERROR, message, details)


class PlannerTimeoutError(ApiError):
    """The request's wait bound passed; the job goes on and its result is stored when the task ends."""

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(ErrorCode.GATEWAY_TIMEOUT, message, details)


class SecretUnavailableError(Exception):
    """A ciphertext that does not decrypt with the configured keys (rotated away, tampered, or not this user's)."""
