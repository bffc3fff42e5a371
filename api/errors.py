"""API exceptions and the one error body they render to, REST-wide.

    ApiError(code, message, details)        -- services raise these, never HTTP exceptions
     +-- BadRequestError                     400 bad_request
     +-- ValidationFailedError               422 validation_error
     +-- UnauthorizedError                   401 unauthorized
     +-- ForbiddenError                      403 forbidden
     +-- NotFoundError                       404 not_found
     +-- ConflictError                       409 conflict
     +-- PayloadTooLargeError                413 payload_too_large
     +-- RateLimitedError(retry_after_s)     429 rate_limited (+ Retry-After)
     +-- ServiceUnavailableError             503 service_unavailable
     +-- TaskNotRunnableError                409 task_not_runnable

Litestar's own HTTP exceptions (unknown route, wrong method, body validation, size limit) and any
unexpected exception are mapped through `_STATUS_TO_CODE` to the same body, with the request id.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import MediaType, Response
from litestar.exceptions import HTTPException, ValidationException

from protocol.errors import ErrorBody, ErrorCode

if TYPE_CHECKING:
    from litestar.connection import Request
    from litestar.types import ExceptionHandlersMap

__all__ = (
    "ApiError",
    "BadRequestError",
    "ConflictError",
    "ForbiddenError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "ServiceUnavailableError",
    "TaskNotRunnableError",
    "UnauthorizedError",
    "ValidationFailedError",
    "error_body_bytes",
    "exception_handlers",
    "field_from_message",
    "generic_error",
    "request_id_of",
)

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """A failure with a catalogue entry; rendered as the error body with its HTTP status."""

    def __init__(self, code: ErrorCode, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def headers(self) -> dict[str, str]:
        return {}


class BadRequestError(ApiError):
    """Malformed request (bad JSON, bad header)."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(ErrorCode.BAD_REQUEST, message, details)


class ValidationFailedError(ApiError):
    """Well-formed but invalid input; `details` names the field."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(ErrorCode.VALIDATION_ERROR, message, details)


class UnauthorizedError(ApiError):
    """Missing or bad credentials; always the same generic message to the client."""

    def __init__(self, message: str = "authentication required", details: dict[str, Any] | None = None) -> None:
        super().__init__(ErrorCode.UNAUTHORIZED, message, details)


class ForbiddenError(ApiError):
    """Authenticated but not allowed."""

    def __init__(self, message: str = "forbidden", details: dict[str, Any] | None = None) -> None:
        super().__init__(ErrorCode.FORBIDDEN, message, details)


class NotFoundError(ApiError):
    """Unknown id, or an id the caller may not see (same answer for both)."""

    def __init__(self, message: str = "not found", details: dict[str, Any] | None = None) -> None:
        super().__init__(ErrorCode.NOT_FOUND, message, details)


class ConflictError(ApiError):
    """The request clashes with the current state (e.g. a duplicate email)."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(ErrorCode.CONFLICT, message, details)


class PayloadTooLargeError(ApiError):
    """A body or a field over its size limit."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(ErrorCode.PAYLOAD_TOO_LARGE, message, details)


class RateLimitedError(ApiError):
    """Too many requests; the client may retry after `retry_after_s`."""

    def __init__(self, retry_after_s: int, message: str = "too many requests, retry later") -> None:
        super().__init__(ErrorCode.RATE_LIMITED, message, {"retryAfterS": max(1, retry_after_s)})
        self.retry_after_s = max(1, retry_after_s)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class ServiceUnavailableError(ApiError):
    """A dependency (database, Redis) is down; retry later."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(ErrorCode.SERVICE_UNAVAILABLE, message, details)


class TaskNotRunnableError(ApiError):
    """The task is in a state that does not allow the operation."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(ErrorCode.TASK_NOT_RUNNABLE, message, details)


# Litestar's HTTP exceptions carry only a status; this is their catalogue entry.
_STATUS_TO_CODE: dict[int, ErrorCode] = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    422: ErrorCode.VALIDATION_ERROR,
    429: ErrorCode.RATE_LIMITED,
    500: ErrorCode.INTERNAL_ERROR,
    502: ErrorCode.UPSTREAM_ERROR,
    503: ErrorCode.SERVICE_UNAVAILABLE,
    504: ErrorCode.GATEWAY_TIMEOUT,
}

_GENERIC_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.NOT_FOUND: "not found",
    ErrorCode.METHOD_NOT_ALLOWED: "method not allowed",
    ErrorCode.PAYLOAD_TOO_LARGE: "request body too large",
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: "unsupported media type, send application/json",
    ErrorCode.UNAUTHORIZED: "authentication required",
    ErrorCode.FORBIDDEN: "forbidden",
    ErrorCode.INTERNAL_ERROR: "internal error",
    ErrorCode.SERVICE_UNAVAILABLE: "service unavailable",
}

_REQUEST_ID_KEY = "request_id"


def generic_error(status: int) -> tuple[ErrorCode, str]:
    """The catalogue entry and a generic message for a bare HTTP status."""
    code = _STATUS_TO_CODE.get(status, ErrorCode.INTERNAL_ERROR if status >= 500 else ErrorCode.BAD_REQUEST)
    return code, _GENERIC_MESSAGES.get(code, "internal error" if status >= 500 else "bad request")


def request_id_of(scope_state: dict[str, Any]) -> str | None:
    value = scope_state.get(_REQUEST_ID_KEY)
    return value if isinstance(value, str) else None


def error_body_bytes(code: ErrorCode, message: str, details: dict[str, Any] | None, request_id: str | None) -> bytes:
    return msgspec.json.encode(ErrorBody.of(code, message, details=details, request_id=request_id))


def _response(
    request: Request[Any, Any, Any],
    code: ErrorCode,
    message: str,
    details: dict[str, Any] | None,
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    return Response(
        content=error_body_bytes(code, message, details, request_id_of(request.scope.get("state", {}))),
        status_code=code.http_status,
        media_type=MediaType.JSON,
        headers=headers or {},
    )


def _handle_api_error(request: Request[Any, Any, Any], exc: ApiError) -> Response[bytes]:
    return _response(request, exc.code, exc.message, exc.details, exc.headers())


def _validation_details(exc: ValidationException) -> tuple[ErrorCode, str, dict[str, Any] | None]:
    """Split Litestar's body errors into malformed JSON (400) and field errors (422 naming fields)."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    fields: list[dict[str, str]] = []
    for item in extra:
        if not isinstance(item, dict):
            continue
        key = item.get("key")
        msg = str(item.get("message", "invalid value"))
        if key == "data":  # the whole body: msgspec names the field in the message (`password`, `$.a.b`)
            key = field_from_message(msg) or "body"
        if key:
            fields.append({"field": str(key), "message": msg})
        elif "malformed" in msg.lower() or "json" in msg.lower() or "decode" in msg.lower():
            return ErrorCode.BAD_REQUEST, "malformed JSON body", None
        else:
            fields.append({"field": "body", "message": msg})
    if not fields:
        return ErrorCode.BAD_REQUEST, "malformed request", None
    return ErrorCode.VALIDATION_ERROR, "request validation failed", {"field": fields[0]["field"], "errors": fields}


_FIELD_IN_MESSAGE = re.compile(r"(?:field|at) `(?:\$\.)?([^`]+)`")


def field_from_message(message: str) -> str | None:
    """The field msgspec names in a validation message (`$.a.b` -> `a.b`), if any."""
    match = _FIELD_IN_MESSAGE.search(message)
    return match.group(1) if match else None


def _handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    if isinstance(exc, ValidationException):
        code, message, details = _validation_details(exc)
        return _response(request, code, message, details)
    fallback = ErrorCode.INTERNAL_ERROR if exc.status_code >= 500 else ErrorCode.BAD_REQUEST
    code = _STATUS_TO_CODE.get(exc.status_code, fallback)
    message = _GENERIC_MESSAGES.get(code) or (exc.detail if exc.status_code < 500 else "internal error")
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() in ("allow", "retry-after")}
    return _response(request, code, message, None, headers)


def _handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    logger.error(
        "unhandled exception request_id=%s method=%s path=%s",
        request_id_of(request.scope.get("state", {})),
        request.method,
        request.url.path,
        exc_info=exc,
    )
    return _response(request, ErrorCode.INTERNAL_ERROR, "internal error", None)


def exception_handlers() -> ExceptionHandlersMap:
    """The app-level handlers: ours, Litestar's HTTP exceptions, then everything else as a 500."""
    return {
        ApiError: _handle_api_error,
        HTTPException: _handle_http_exception,
        Exception: _handle_unexpected,
    }
