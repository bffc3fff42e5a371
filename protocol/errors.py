"""The one error catalogue (name, numeric code, HTTP status) and the error body every surface renders.

Hierarchy::

    Exception
     └── ProtocolError            a frame or payload the protocol refuses (carries an ErrorCode)
          └── InvalidUtf8Error    the frame is not valid UTF-8 (the server closes with 1007)

This module must not know about transports: it names errors, it does not send them.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

__all__ = (
    "CLOSE_INVALID_PAYLOAD",
    "CLOSE_MESSAGE_TOO_BIG",
    "ErrorBody",
    "ErrorCode",
    "InvalidUtf8Error",
    "ProtocolError",
)

CLOSE_INVALID_PAYLOAD = 1007
"""WebSocket close code for a frame that is not valid UTF-8 (RFC 6455 §7.4.1)."""
CLOSE_MESSAGE_TOO_BIG = 1009
"""WebSocket close code for a frame over the size limit (RFC 6455 §7.4.1)."""


class ErrorCode(enum.Enum):
    """Every error the system reports: `.error` (stable wire name), `.code` (number), `.http_status`.

    The member value is the triple; look members up by wire name with `ErrorCode.from_error()`.
    """

    error: str
    code: int
    http_status: int

    BAD_REQUEST = ("bad_request", 1000, 400)
    VALIDATION_ERROR = ("validation_error", 1001, 422)
    UNAUTHORIZED = ("unauthorized", 1002, 401)
    FORBIDDEN = ("forbidden", 1003, 403)
    IDEMPOTENCY_KEY_REUSED = ("idempotency_key_reused", 1004, 422)
    PAYLOAD_TOO_LARGE = ("payload_too_large", 1005, 413)
    UNSUPPORTED_MEDIA_TYPE = ("unsupported_media_type", 1006, 415)
    RATE_LIMITED = ("rate_limited", 1029, 429)
    NOT_FOUND = ("not_found", 2001, 404)
    METHOD_NOT_ALLOWED = ("method_not_allowed", 2005, 405)
    CONFLICT = ("conflict", 2009, 409)
    TASK_NOT_RUNNABLE = ("task_not_runnable", 3001, 409)
    STALE_ATTEMPT = ("stale_attempt", 3002, 409)
    NOT_ASSIGNED = ("not_assigned", 3003, 409)
    STREAM_GAP = ("stream_gap", 3004, 409)
    INTERNAL_ERROR = ("internal_error", 5000, 500)
    UPSTREAM_ERROR = ("upstream_error", 5002, 502)
    SERVICE_UNAVAILABLE = ("service_unavailable", 5003, 503)
    GATEWAY_TIMEOUT = ("gateway_timeout", 5004, 504)

    def __init__(self, error: str, code: int, http_status: int) -> None:
        self.error = error
        self.code = code
        self.http_status = http_status

    @classmethod
    def from_error(cls, error: str) -> ErrorCode:
        """Return the member whose wire name is `error`.

        Raises:
            KeyError: no member has that name.
        """
        return _BY_ERROR[error]

    @classmethod
    def from_code(cls, code: int) -> ErrorCode:
        """Return the member with numeric code `code`.

        Raises:
            KeyError: no member has that code.
        """
        return _BY_CODE[code]


_BY_ERROR: dict[str, ErrorCode] = {member.error: member for member in ErrorCode}
_BY_CODE: dict[int, ErrorCode] = {member.code: member for member in ErrorCode}


class ErrorBody(msgspec.Struct, rename="camel", omit_defaults=True, forbid_unknown_fields=True, kw_only=True):
    """The one error body, REST and WebSocket alike. None fields are left out of the JSON."""

    error: str
    """Stable wire name from the catalogue, e.g. `validation_error`."""
    message: str
    """Human-readable explanation; never contains secrets."""
    code: int
    """Numeric code from the catalogue, e.g. 1001."""
    details: dict[str, Any] | None = None
    """Structured context, e.g. `{"field": "$.payload.taskId"}`."""
    request_id: str | None = None
    """The request's `X-Request-ID` (REST only)."""

    @classmethod
    def of(
        cls,
        code: ErrorCode,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> ErrorBody:
        """Build a body for a catalogue entry."""
        return cls(error=code.error, message=message, code=code.code, details=details, request_id=request_id)


class ProtocolError(Exception):
    """A frame or payload the protocol refuses.

    Attributes:
        code: the catalogue entry (`validation_error`, `payload_too_large`, ...).
        message: what is wrong, safe to show to the peer.
        details: structured context; `{"field": "$.payload.taskId"}` names the offending field.
        ref: the refused frame's envelope id when it could be read, for the error frame's `ref`.
        close_code: the WebSocket close code this error calls for, or None when an error frame is enough.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        ref: str | None = None,
        close_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.ref = ref
        self.close_code = close_code

    def to_body(self, *, request_id: str | None = None) -> ErrorBody:
        """Render this error as the one error body."""
        return ErrorBody.of(self.code, self.message, details=self.details, request_id=request_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.error!r}, {self.message!r}, details={self.details!r})"


class InvalidUtf8Error(ProtocolError):
    """The frame is not valid UTF-8; the server closes the socket with 1007 instead of answering."""

    def __init__(self, message: str = "frame is not valid UTF-8", details: dict[str, Any] | None = None) -> None:
        super().__init__(ErrorCode.BAD_REQUEST, message, details, close_code=CLOSE_INVALID_PAYLOAD)
