"""Frame I/O for one WebSocket: size, binary and envelope checks, the bad-frame budget, serialized sends.

Role-agnostic: it knows frames, not agents or watchers. Never raises on a peer's bad input except
`SessionClosed` (the socket must close with that code) and `PeerGoneError` (the peer already left).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from litestar.exceptions import WebSocketDisconnect

from api.ws.direct import direct_writer, text_frame
from protocol.envelope import Frame, decode_frame, encode_frame
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import ErrorFrame

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection

    from litestar import WebSocket

    from api.ws.direct import DirectWriter
    from protocol.messages import Message

__all__ = ("CloseCode", "FrameSocket", "PeerGoneError", "SessionClosed", "ViolationBudget")

logger = logging.getLogger(__name__)


class CloseCode(enum.IntEnum):
    """Close codes the server uses (docs/architecture.md, "WebSocket close codes")."""

    NORMAL = 1000
    GOING_AWAY = 1001
    UNSUPPORTED_DATA = 1003
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    LAGGED = 4008
    IDLE = 4408


class SessionClosed(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Ends a session: the server closes the socket with `code` and `reason`."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class PeerGoneError(Exception):
    """The peer closed the connection (or it broke); nothing more can be sent."""


class ViolationBudget:
    """Counts bad frames in a sliding window; `spend()` says when the budget is exhausted."""

    def __init__(self, limit: int, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._window_s = window_s
        self._clock = clock
        self._stamps: deque[float] = deque()

    def spend(self) -> bool:
        """Record one violation; True when it is past the limit (the caller closes with 1008)."""
        now = self._clock()
        while self._stamps and now - self._stamps[0] > self._window_s:
            self._stamps.popleft()
        self._stamps.append(now)
        return len(self._stamps) > self._limit


def _utf8_len_over(text: str, limit: int) -> bool:
    # A str of n code points encodes to n..4n bytes: only encode when the cheap bounds can't decide.
    if len(text) > limit:
        return True
    if len(text) * 4 <= limit:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit


class FrameSocket:
    """A Litestar WebSocket seen as a stream of decoded frames, with one lock around sends.

    Sends go straight to the transport when the server offers it (`api.ws.direct`), else through the
    ASGI `send`; either way one frame at a time, in the order sent.
    """

    def __init__(
        self,
        socket: WebSocket[Any, Any, Any],
        *,
        max_frame_bytes: int,
        budget: ViolationBudget,
        accept: Collection[str] | None = None,
    ) -> None:
        self.socket = socket
        self.max_frame_bytes = max_frame_bytes
        self.budget = budget
        self.accept = accept
        self.on_refused: Callable[[ProtocolError], Awaitable[None]] | None = None
        """Called before a refused frame is answered (e.g. to record an oversized result on its task)."""
        self._send_lock = asyncio.Lock()
        self.last_frame_chars = 0
        """Length of the last text frame received (what a caller holding decoded frames accounts for)."""
        self.closed = False
        self.close_code: int | None = None
        self.direct: DirectWriter | None = direct_writer(getattr(socket, "scope", {}))

    async def receive(self, timeout_s: float | None = None) -> Frame | None:
        """The next well-formed frame, or None after a bad one was answered with an `error` frame.

        Raises:
            TimeoutError: nothing arrived within `timeout_s`.
            SessionClosed: the frame calls for a close (binary, too big, bad UTF-8, bad-frame budget spent).
            PeerGoneError: the peer disconnected.
        """
        try:
            # Not wait_for: it wraps every receive in a new task, so a reader takes one frame per loop
            # cycle; under load its frames (an agent's heartbeats and accepts) then queue behind all else.
            async with asyncio.timeout(timeout_s):
                event = await self.socket.receive()
        except WebSocketDisconnect as exc:
            raise PeerGoneError from exc
        if event["type"] == "websocket.disconnect":
            raise PeerGoneError
        text = event.get("text")
        if not isinstance(text, str):
            raise SessionClosed(CloseCode.UNSUPPORTED_DATA, "binary frames are not supported")
        self.last_frame_chars = len(text)
        if _utf8_len_over(text, self.max_frame_bytes):
            raise SessionClosed(CloseCode.MESSAGE_TOO_BIG, f"frame over {self.max_frame_bytes} bytes")
        try:
            return decode_frame(text, max_bytes=self.max_frame_bytes, accept=self.accept)
        except ProtocolError as exc:
            if exc.close_code is not None:
                raise SessionClosed(exc.close_code, exc.message) from exc
            if self.on_refused is not None:
                await self.on_refused(exc)
            await self.reject(exc.code, exc.message, details=exc.details, ref=exc.ref)
            return None

    async def reject(
        self, code: ErrorCode, message: str, *, details: dict[str, Any] | None = None, ref: str | None = None
    ) -> None:
        """Answer a refused frame with an `error` frame and spend one unit of the bad-frame budget."""
        await self.send(ErrorFrame.of(code, message, details=details, ref=ref))
        if self.budget.spend():
            raise SessionClosed(CloseCode.POLICY_VIOLATION, "too many bad frames")

    async def send(self, message: Message) -> None:
        """Encode and send one frame (dropped silently once the socket is closing)."""
        await self.send_encoded(encode_frame(message))

    async def send_text(self, text: str) -> None:
        """Send one already-encoded frame.

        Raises:
            PeerGoneError: the connection is gone.
        """
        await self._send(text)

    async def send_encoded(self, payload: bytes) -> None:
        """`send_text` for a frame as the protocol's encoders return it (UTF-8 bytes): the direct path frames
        the bytes as they are, with no decode and encode again."""
        await self._send(payload)

    async def _send(self, frame: str | bytes) -> None:
        """One frame, as text or as its UTF-8 bytes."""
        async with self._send_lock:
            if self.closed:
                return
            direct = self.direct
            if direct is not None:
                if direct.paused():
                    await direct.wait_writable()
                    if self.closed:  # closed while the peer was not reading
                        return
                if not direct.write(text_frame(frame if isinstance(frame, bytes) else frame.encode())):
                    self.closed = True
                    raise PeerGoneError
                return
            try:
                await self.socket.send_text(frame if isinstance(frame, str) else frame.decode())
            except (WebSocketDisconnect, OSError, RuntimeError) as exc:
                # uvicorn raises ClientDisconnected (an OSError) or RuntimeError after the peer left.
                self.closed = True
                raise PeerGoneError from exc

    def write_now(self, wire: bytes) -> bool:
        """Write whole frames now, without waiting, when nothing stands before them: a direct writer, no
        send in progress, the transport not paused. False: nothing written (send it the usual way)."""
        direct = self.direct
        if direct is None or self.closed or self._send_lock.locked() or direct.paused():
            return False
        return direct.write(wire)

    async def close(self, code: int, reason: str = "", *, timeout_s: float = 2.0) -> None:
        """Close once; later calls and a peer that already left are no-ops.

        Takes no lock and waits at most `timeout_s`: a peer that stopped reading blocks every write,
        the close frame included; returning from the handler then makes uvicorn drop the transport.
        """
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        try:
            await asyncio.wait_for(self.socket.close(code=code, reason=reason[:120]), timeout_s)
        except (WebSocketDisconnect, OSError, RuntimeError, TimeoutError):
            logger.debug("close did not go through", extra={"close_code": code})
