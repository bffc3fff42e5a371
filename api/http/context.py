"""Per-request facts: the request id (validated `X-Request-ID` or a fresh one) and the client IP."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from api.errors import request_id_of

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection

__all__ = (
    "REQUEST_ID_HEADER",
    "CallContext",
    "call_context",
    "client_ip",
    "new_request_id",
    "request_id",
    "valid_request_id",
)

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


@dataclass(frozen=True, slots=True)
class CallContext:
    """Where a call comes from, for rate limits and audit rows."""

    ip: str
    request_id: str | None


def valid_request_id(value: str | None) -> str | None:
    """The caller's id when it is 1..128 chars of [A-Za-z0-9._-]; else None (a fresh one is made)."""
    if value and _REQUEST_ID_RE.fullmatch(value):
        return value
    return None


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    return request_id_of(connection.scope.get("state", {}))


def client_ip(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The socket peer, or the first `X-Forwarded-For` hop when the operator trusts a proxy in front."""
    settings = connection.app.state.settings
    if settings.http.trust_forwarded_for:
        forwarded = connection.headers.get("x-forwarded-for", "")
        first = forwarded.split(",")[0].strip()
        if first:
            return first[:64]
    client = connection.client
    return client.host if client else "unknown"


def call_context(connection: ASGIConnection[Any, Any, Any, Any]) -> CallContext:
    return CallContext(ip=client_ip(connection), request_id=request_id(connection))
