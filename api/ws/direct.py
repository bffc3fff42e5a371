"""Server WebSocket frames written straight to the connection's transport, below ASGI.

Why: a watcher frame sent through the ASGI `send` passes Litestar's and uvicorn's per-send wrappers,
is encoded, framed and joined again by the websockets protocol object, and copied three times; with
a thousand sockets watching, that per-socket work (not the bytes) was most of the fan-out's cost. A
shared chunk's frame bytes are built once and the same `bytes` go to every transport.

How it is hooked in: `taskyard api` runs uvicorn with `DirectWebSocketProtocol` (uvicorn's `ws` option
takes a protocol class), uvicorn's sans-I/O websockets protocol plus one ASGI scope extension,
`taskyard.ws.direct`, holding a `DirectWriter`. A `FrameSocket` whose scope lacks it (another server
or protocol, a test client) sends everything through the ASGI `send`, as before. The writer only
appends whole frames to the transport, after the handshake and before the close, so uvicorn's
protocol object (pings, the close handshake) keeps working unchanged beside it; the attributes it
reads are pinned by tests/integration/api/test_ws_direct.py.

Flow control: the transport calls the protocol's `pause_writing` past its high-water mark, which
uvicorn turns into an event its own `send` waits on; the writer exposes the same signal, so a slow
peer's frames wait in the session's bounded outbox (4008 past its cap), not in the transport's buffer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

if TYPE_CHECKING:
    from collections.abc import Mapping

    from websockets.http11 import Request

__all__ = ("SCOPE_KEY", "DirectWebSocketProtocol", "DirectWriter", "direct_writer", "text_frame")

SCOPE_KEY = "taskyard.ws.direct"


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented RFC 6455 text frame (what a server sends) carrying `payload` (UTF-8)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x81, n))
    elif n < 1 << 16:
        head = b"\x81\x7e" + n.to_bytes(2, "big")
    else:
        head = b"\x81\x7f" + n.to_bytes(8, "big")
    return head + payload


class DirectWriter:
    """Whole frames to one connection's transport, while uvicorn's protocol says the socket is open."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self._protocol = protocol

    def paused(self) -> bool:
        """The transport's buffer is past its high-water mark (the peer reads slower than we write)."""
        return not self._protocol.writable.is_set()

    async def wait_writable(self) -> None:
        await self._protocol.writable.wait()

    def buffered(self) -> int:
        """Bytes waiting in the transport's buffer."""
        return int(self._protocol.transport.get_write_buffer_size())

    def write(self, frame: bytes) -> bool:
        """Append one or more whole frames; False (nothing written) once the socket is closing or gone."""
        protocol = self._protocol
        transport = protocol.transport
        if (
            not protocol.handshake_complete
            or protocol.close_sent
            or protocol.disconnected
            or transport is None
            or transport.is_closing()
        ):
            return False
        transport.write(frame)
        return True


class DirectWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O websockets protocol, offering a `DirectWriter` to the app in the scope."""

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # uvicorn built the scope above; the app's task starts on a later loop turn and reads it then.
        scope: dict[str, Any] | None = getattr(self, "scope", None)
        if scope is not None and scope.get("type") == "websocket":
            scope.setdefault("extensions", {})[SCOPE_KEY] = DirectWriter(self)


def direct_writer(scope: Mapping[str, Any]) -> DirectWriter | None:
    """The connection's direct writer when the server offers one."""
    writer = (scope.get("extensions") or {}).get(SCOPE_KEY)
    return writer if isinstance(writer, DirectWriter) else None
