"""The outermost HTTP layer: request id in and out, one access-log line, and a last-resort 500.

It wraps Litestar's whole ASGI handler (routing included), so unknown routes and 405s get the
request id header too; Litestar's own middleware only runs for matched routes.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from litestar.enums import ScopeType

from api.errors import ApiError, error_body_bytes
from api.http.context import REQUEST_ID_HEADER, new_request_id, valid_request_id
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ("RequestContextMiddleware", "require_json_body")

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("api.access")

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _printable(text: str) -> str:
    """Escape control characters so a crafted path cannot forge log lines."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)[:512]


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, access_log: bool = True) -> None:
        self._app = app
        self._access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in (ScopeType.HTTP, ScopeType.WEBSOCKET):
            await self._app(scope, receive, send)
            return
        rid = valid_request_id(_header(scope, REQUEST_ID_HEADER.encode())) or new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        if scope["type"] == ScopeType.WEBSOCKET:
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status: list[int] = []

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", rid.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self._app(scope, receive, send_with_id)
        except Exception:
            logger.exception("unhandled exception outside the route stack request_id=%s", rid)
            if not status:
                await _send_error(send_with_id, ErrorCode.INTERNAL_ERROR, "internal error", rid)
        finally:
            if self._access_log:
                access_logger.info(
                    "request_id=%s method=%s path=%s status=%s latency_ms=%.1f",
                    rid,
                    scope.get("method", ""),
                    _printable(scope.get("path", "")),
                    status[0] if status else 0,
                    (time.perf_counter() - started) * 1000,
                )


async def _send_error(send: Send, code: ErrorCode, message: str, rid: str) -> None:
    body = error_body_bytes(code, message, None, rid)
    await send(
        {
            "type": "http.response.start",
            "status": code.http_status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def require_json_body(app: ASGIApp) -> ASGIApp:
    """Route middleware: a body sent with POST/PUT/PATCH must be JSON, else 415 (after routing, so 404/405 win)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope.get("method") in _BODY_METHODS:
            length = _header(scope, b"content-length")
            has_body = (length is not None and length.strip() not in ("", "0")) or (
                _header(scope, b"transfer-encoding") is not None
            )
            content_type = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
            if has_body and not (content_type == "application/json" or content_type.endswith("+json")):
                raise ApiError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "unsupported media type, send application/json")
        await app(scope, receive, send)

    return middleware
