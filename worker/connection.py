"""The agent's WebSocket: open it, authenticate, send and receive text frames. The only `websockets` importer.

It translates every library error into `worker.errors` (`AuthenticationError`: stop; `ConnectionLostError`:
reconnect), so the runtime never sees the library. Reconnecting is the runtime's job (with `worker.backoff`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException

from protocol.envelope import SERVER_SENDS, decode_frame
from protocol.errors import ErrorCode, ProtocolError
from protocol.limits import MAX_AGENT_FRAME_BYTES
from protocol.messages import AuthError, AuthOk
from worker.errors import AuthenticationError, ConnectionLostError

if TYPE_CHECKING:
    from worker.settings import Secret

__all__ = ("CLOSE_POLICY_VIOLATION", "AgentConnection", "ConnectParams", "open_connection")

logger = logging.getLogger(__name__)

CLOSE_POLICY_VIOLATION = 1008
"""Close code the server uses for auth failures, revoked tokens and deleted agents."""

_AUTH_STATUSES = frozenset({401, 403})
"""Handshake answers that mean "these credentials are refused" rather than "try again later"."""
_TRANSIENT_AUTH_ERRORS = frozenset(
    {
        ErrorCode.INTERNAL_ERROR.error,
        ErrorCode.SERVICE_UNAVAILABLE.error,
        ErrorCode.RATE_LIMITED.error,
        ErrorCode.GATEWAY_TIMEOUT.error,
        ErrorCode.UPSTREAM_ERROR.error,
    }
)
"""`auth/error` names that say the server could not check the credentials now: retried, not fatal."""


@dataclass(frozen=True, slots=True)
class ConnectParams:
    """Everything needed to open the agent socket."""

    url: str
    agent_id: str
    agent_token: Secret
    token_in_query: bool = False
    open_timeout_s: float = 10.0
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    use_env_proxy: bool = False

    def handshake_url(self) -> str:
        """The URL with `role=agent`, `agent_id` (and `agent_token` when configured) in the query."""
        parts = urlsplit(self.url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("role", "agent_id", "agent_token")]
        query += [("role", "agent"), ("agent_id", self.agent_id)]
        if self.token_in_query:
            query.append(("agent_token", self.agent_token.reveal()))
        return urlunsplit((parts.scheme, parts.netloc, parts.path or "/ws", urlencode(query), ""))

    def headers(self) -> dict[str, str]:
        """The handshake headers: the agent id, and the bearer token unless it travels in the query."""
        headers = {"X-Agent-ID": self.agent_id}
        if not self.token_in_query:
            headers["Authorization"] = f"Bearer {self.agent_token.reveal()}"
        return headers


class AgentConnection:
    """One authenticated socket. `send()` writes a text frame; `recv()` returns the next frame's text."""

    def __init__(self, ws: ClientConnection, auth: AuthOk) -> None:
        self._ws = ws
        self.auth = auth
        """The server's `auth/ok` (session id, heartbeat interval and timeout)."""

    async def send(self, frame: bytes) -> None:
        """Write one encoded frame as a text frame (the server closes binary frames with 1003).

        Raises:
            ConnectionLostError: the socket is closed.
        """
        try:
            await self._ws.send(frame, text=True)
        except ConnectionClosed as exc:
            raise _lost(exc) from exc

    async def recv(self) -> str:
        """The next frame from the server.

        A close mid-session is always `ConnectionLostError`, even 1008 (also sent for a flood of bad
        frames): if the credentials were revoked, the reconnect's `auth/error` says so.

        Raises:
            ConnectionLostError: the socket closed.
        """
        try:
            message = await self._ws.recv()
        except ConnectionClosed as exc:
            raise _lost(exc) from exc
        return message if isinstance(message, str) else message.decode("utf-8", errors="replace")

    async def close(self) -> None:
        """Close the socket (idempotent)."""
        await self._ws.close()


async def open_connection(params: ConnectParams) -> AgentConnection:
    """Open the socket and wait for `auth/ok`.

    Raises:
        AuthenticationError: the server refused the credentials (401/403 handshake, `auth/error`, close 1008).
        ConnectionLostError: anything else (unreachable, timeout, protocol failure): worth a retry.
    """
    try:
        ws = await connect(
            params.handshake_url(),
            additional_headers=params.headers(),
            max_size=MAX_AGENT_FRAME_BYTES,
            open_timeout=params.open_timeout_s,
            ping_interval=params.ping_interval_s,
            ping_timeout=params.ping_timeout_s,
            proxy=True if params.use_env_proxy else None,
            # Frames are small JSON: permessage-deflate costs both ends more CPU than it saves bytes.
            compression=None,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in _AUTH_STATUSES:
            raise AuthenticationError(f"handshake refused with HTTP {status}") from exc
        raise ConnectionLostError(f"handshake refused with HTTP {status}") from exc
    except InvalidURI as exc:
        raise AuthenticationError(f"invalid URL: {exc}", error="bad_request") from exc
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise ConnectionLostError(f"cannot connect: {type(exc).__name__}: {exc}") from exc
    try:
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that races the auth frame.
        async with asyncio.timeout(params.open_timeout_s):
            auth = await _read_auth(ws)
    except TimeoutError as exc:
        await ws.close()
        raise ConnectionLostError("no auth frame from the server in time") from exc
    except BaseException:
        await ws.close()
        raise
    return AgentConnection(ws, auth)


async def _read_auth(ws: ClientConnection) -> AuthOk:
    try:
        raw = await ws.recv()
    except ConnectionClosed as exc:
        raise _closed_error(exc) from exc
    except TimeoutError as exc:
        raise ConnectionLostError("no auth frame from the server in time") from exc
    try:
        frame = decode_frame(raw, max_bytes=MAX_AGENT_FRAME_BYTES, accept=SERVER_SENDS)
    except ProtocolError as exc:
        raise ConnectionLostError(f"unreadable first frame: {exc.message}") from exc
    payload = frame.payload
    if isinstance(payload, AuthOk):
        return payload
    if isinstance(payload, AuthError):
        if payload.error in _TRANSIENT_AUTH_ERRORS:
            raise ConnectionLostError(f"server could not authenticate now: {payload.error}: {payload.message}")
        raise AuthenticationError(payload.message, error=payload.error)
    raise ConnectionLostError(f"expected auth/ok, got {frame.type}")


def _closed_error(exc: ConnectionClosed) -> AuthenticationError | ConnectionLostError:
    if exc.rcvd is not None and exc.rcvd.code == CLOSE_POLICY_VIOLATION:
        reason = exc.rcvd.reason or "policy violation"
        return AuthenticationError(f"server closed the connection: {reason}")
    return _lost(exc)


def _lost(exc: ConnectionClosed) -> ConnectionLostError:
    code = exc.rcvd.code if exc.rcvd is not None else None
    return ConnectionLostError(f"connection closed (code {code})")
