"""Controller-level exception handlers: a database or Redis outage is a 503, never a 500.

Rendered with the one error body (`api.errors.error_body_bytes`) and the request id, like every
other error. Integrity errors are not outages and are left to the services.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import redis.exceptions
import sqlalchemy.exc
from litestar import MediaType, Response

from api.errors import error_body_bytes, request_id_of
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from litestar.connection import Request
    from litestar.types import ExceptionHandlersMap

__all__ = ("dependency_error_handlers",)

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 2


def _unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    request_id = request_id_of(request.scope.get("state", {}))
    logger.warning(
        "dependency unavailable request_id=%s path=%s error=%s", request_id, request.url.path, type(exc).__name__
    )
    code = ErrorCode.SERVICE_UNAVAILABLE
    return Response(
        content=error_body_bytes(code, "a backing service is unavailable, retry later", None, request_id),
        status_code=code.http_status,
        media_type=MediaType.JSON,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def dependency_error_handlers() -> ExceptionHandlersMap:
    return {
        sqlalchemy.exc.OperationalError: _unavailable,
        sqlalchemy.exc.InterfaceError: _unavailable,
        sqlalchemy.exc.TimeoutError: _unavailable,
        redis.exceptions.ConnectionError: _unavailable,
        redis.exceptions.TimeoutError: _unavailable,
    }
