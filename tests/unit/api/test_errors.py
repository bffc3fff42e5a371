"""The API exception tree maps onto the protocol catalogue."""

from __future__ import annotations

import msgspec
import pytest

from api.errors import (
    ApiError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServiceUnavailableError,
    TaskNotRunnableError,
    UnauthorizedError,
    ValidationFailedError,
    error_body_bytes,
)
from protocol.errors import ErrorCode


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (BadRequestError("x"), ErrorCode.BAD_REQUEST),
        (ValidationFailedError("x", {"field": "email"}), ErrorCode.VALIDATION_ERROR),
        (UnauthorizedError(), ErrorCode.UNAUTHORIZED),
        (ForbiddenError(), ErrorCode.FORBIDDEN),
        (NotFoundError(), ErrorCode.NOT_FOUND),
        (ConflictError("x"), ErrorCode.CONFLICT),
        (PayloadTooLargeError("x"), ErrorCode.PAYLOAD_TOO_LARGE),
        (RateLimitedError(3), ErrorCode.RATE_LIMITED),
        (ServiceUnavailableError("x"), ErrorCode.SERVICE_UNAVAILABLE),
        (TaskNotRunnableError("x"), ErrorCode.TASK_NOT_RUNNABLE),
        (ApiError(ErrorCode.STALE_ATTEMPT, "x"), ErrorCode.STALE_ATTEMPT),
    ],
)
def test_each_error_carries_its_catalogue_entry(error: ApiError, code: ErrorCode) -> None:
    assert error.code is code


def test_rate_limited_error_has_retry_after_header() -> None:
    assert RateLimitedError(0).headers() == {"Retry-After": "1"}
    assert RateLimitedError(42).headers() == {"Retry-After": "42"}


def test_error_body_is_camel_case_and_omits_empty_details() -> None:
    body = msgspec.json.decode(error_body_bytes(ErrorCode.NOT_FOUND, "not found", None, "rid-1"))
    assert body == {"error": "not_found", "message": "not found", "code": 2001, "requestId": "rid-1"}
