"""Per-request facts: the request id (validated `X-Request-ID` or a fresh one) and the client IP."""

from __future__ import annotations

import functools
import ipaddress
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
    "forwarded_client",
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


@functools.lru_cache(maxsize=8)
def _networks(proxies: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def _trusted(host: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def forwarded_client(peer: str, forwarded_for: str, proxies: tuple[str, ...]) -> str:
    """The client address: `peer`, unless `peer` is a trusted proxy; then the nearest `X-Forwarded-For` hop
    (right to left) that is not a trusted proxy. Hops left of an untrusted one could be forged, so they are
    never used."""
    networks = _networks(proxies)
    if not networks or not _trusted(peer, networks):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return hop[:64]
    return hops[0][:64] if hops else peer


def client_ip(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The socket peer, or the client behind it when the peer is one of `TASKYARD_API_TRUSTED_PROXIES`."""
    client = connection.client
    peer = client.host if client else "unknown"
    proxies: tuple[str, ...] = connection.app.state.settings.http.trusted_proxies
    if not proxies:
        return peer
    return forwarded_client(peer, connection.headers.get("x-forwarded-for", ""), proxies)


def call_context(connection: ASGIConnection[Any, Any, Any, Any]) -> CallContext:
    return CallContext(ip=client_ip(connection), request_id=request_id(connection))
