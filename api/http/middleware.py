"""The outermost HTTP layer: request id in and out, security headers, one access-log line, a last-resort 500.

It wraps Litestar's whole ASGI handler (routing included), so unknown routes and 405s get the
request id header too; Litestar's own middleware only runs for matched routes. It is the only access
log (uvicorn's is off): one line per request or WebSocket, the path without its query string, because
watchers and agents may put their tokens there.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from litestar.enums import ScopeType

from api.errors import error_body_bytes, generic_error
from api.http.context import REQUEST_ID_HEADER, new_request_id, valid_request_id
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ("SECURITY_HEADERS", "RequestContextMiddleware")

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("api.access")

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
"""On every HTTP response."""
_NO_STORE = (b"cache-control", b"no-store")
"""On every response that does not set its own Cache-Control: tokens, secrets and user data alike."""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _printable(text: str) -> str:
    """Escape control characters so a crafted path cannot forge log lines."""
    if text.isprintable():
        return text[:512]
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
            await self._websocket(scope, receive, send, rid)
            return
        started = time.perf_counter()
        status: list[int] = []
        if _has_nul(scope):
            # No route could use it and PostgreSQL refuses it in text: answer before anything reads it.
            status.append(400)
            await _send_error_with_headers(send, ErrorCode.BAD_REQUEST, "NUL (%00) is not allowed in URLs", rid)
            self._log(scope, rid, status, started)
            return
        # Set when the app answers an error with a non-JSON body (Litestar's HTML 404 under /schema):
        # that body is dropped and the one error body is sent instead.
        replaced: list[bool] = []

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                headers = list(message.get("headers", ()))
                if message["status"] >= 400 and not _is_json(headers):
                    replaced.append(True)
                    code, text = generic_error(message["status"])
                    await _send_error(send_with_id_raw, code, text, rid)
                    return
                message["headers"] = _with_headers(headers, rid)
            elif message["type"] == "http.response.body" and replaced:
                return
            await send(message)

        async def send_with_id_raw(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _with_headers(list(message.get("headers", ())), rid)
            await send(message)

        try:
            await self._app(scope, receive, send_with_id)
        except Exception:
            logger.exception("unhandled exception outside the route stack request_id=%s", rid)
            if not status:
                status.append(ErrorCode.INTERNAL_ERROR.http_status)
                await _send_error(send_with_id_raw, ErrorCode.INTERNAL_ERROR, "internal error", rid)
        finally:
            self._log(scope, rid, status, started)

    def _log(self, scope: Scope, rid: str, status: list[int], started: float) -> None:
        if self._access_log:
            access_logger.info(
                "request_id=%s method=%s path=%s status=%s latency_ms=%.1f",
                rid,
                scope.get("method", ""),
                _printable(scope.get("path", "")),
                status[0] if status else 0,
                (time.perf_counter() - started) * 1000,
            )

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, rid: str) -> None:
        """One access line when the socket ends: 101 if it was accepted, else the refusal (403 or a status)."""
        started = time.perf_counter()
        status: list[int] = []

        async def watch(message: Message) -> None:
            if not status:
                if message["type"] == "websocket.accept":
                    status.append(101)
                elif message["type"] == "websocket.close":
                    status.append(403)
                elif message["type"] == "websocket.http.response.start":
                    status.append(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, watch)
        finally:
            if self._access_log:
                access_logger.info(
                    "request_id=%s method=WS path=%s status=%s duration_ms=%.1f",
                    rid,
                    _printable(scope.get("path", "")),
                    status[0] if status else 0,
                    (time.perf_counter() - started) * 1000,
                )


def _has_nul(scope: Scope) -> bool:
    return "\x00" in scope.get("path", "") or b"%00" in bytes(scope.get("query_string", b""))


async def _send_error_with_headers(send: Send, code: ErrorCode, message: str, rid: str) -> None:
    async def with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = _with_headers(list(message.get("headers", ())), rid)
        await send(message)

    await _send_error(with_headers, code, message, rid)


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    for key, value in headers:
        if key.lower() == b"content-type":
            media = value.split(b";")[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


def _with_headers(headers: list[tuple[bytes, bytes]], rid: str) -> list[tuple[bytes, bytes]]:
    names = {k.lower() for k, _ in headers}
    out = [(k, v) for k, v in headers if k.lower() != b"x-request-id"]
    out.append((b"x-request-id", rid.encode()))
    out.extend(h for h in SECURITY_HEADERS if h[0] not in names)
    if _NO_STORE[0] not in names:
        out.append(_NO_STORE)
    return out


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
