"""An HTTP response's head and body in one socket write.

Why: uvicorn's httptools protocol writes a response's status line and headers when the app sends
`http.response.start`, and the body in a second write on `http.response.body`. On a keep-alive
connection each write is a `send` system call that also runs the receiver's TCP path on loopback;
for the small JSON answers of this API the two writes were the largest single item of a POST's cost
(a fifth of its time in `RequestResponseCycle.send` under 32 clients). Joining them halves it.

How it is hooked in: `taskyard api` runs uvicorn with `http=JoinedHeadHttpProtocol` (uvicorn's `http`
option takes a protocol class). The protocol gives each request's cycle a `HeadJoiningTransport` in
place of the connection's transport, after uvicorn built the cycle; the connection itself (its close,
the WebSocket upgrade, flow control) keeps the real transport. The attributes read here (`cycle`, and the
cycle's `transport`) are pinned by tests/integration/api/test_joined_writes.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

if TYPE_CHECKING:
    import asyncio

__all__ = ("HeadJoiningTransport", "JoinedHeadHttpProtocol")

_HEAD_END = b"\r\n\r\n"


class HeadJoiningTransport:
    """A response head is held until the next write (its body), then both go in one write.

    A head whose body does not follow in the same loop step (a streamed response that awaits before its
    first chunk) goes out alone on the next step: nothing waits longer than one turn of the loop. An
    interim `1xx` head (`100 Continue`) is never held: the client waits for it before sending the body.
    """

    __slots__ = ("_head", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
        elif data[:5] == b"HTTP/" and data[-4:] == _HEAD_END and data[9:10] != b"1":
            self._head = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Write a held head now (its body did not come in the step that sent it)."""
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class JoinedHeadHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose responses go out as one write each (`HeadJoiningTransport`)."""

    _joining: HeadJoiningTransport

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._joining = HeadJoiningTransport(transport, self.loop)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        # A cycle made just now holds the connection's transport; an upgrade makes none (the WebSocket
        # protocol takes the real transport over).
        if cycle is not None and cycle.transport is self.transport:
            cycle.transport = self._joining  # type: ignore[assignment]
