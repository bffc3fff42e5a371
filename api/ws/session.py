"""What agent and client sessions share: a stop signal, concurrent loops, and the one catch-all.

A session runs its loops (reader, writer, inbox, ...) until the first one ends; that one decides the
close code. An unexpected exception is logged with the session's context and closes only this
socket (1011): one session's failure never touches another.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from api.ws.framing import CloseCode, PeerGoneError, SessionClosed

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from api.ws.framing import FrameSocket

__all__ = ("Session",)

logger = logging.getLogger(__name__)


class Session:
    """Base of `AgentSession` and `ClientSession`."""

    role: str = "?"

    def __init__(self, conn: FrameSocket, session_id: str) -> None:
        self.conn = conn
        self.session_id = session_id
        self.features: list[str] | None = None
        """The handshake features accepted for this peer; None when it asked for none."""
        self._stop = asyncio.Event()
        self._close_request: tuple[int, str] | None = None

    def request_close(self, code: int, reason: str) -> None:
        """Ask the session to close with `code` (from any task; the first request wins)."""
        if self._close_request is None:
            self._close_request = (code, reason)
        self._stop.set()

    def log_context(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "role": self.role}

    def loops(self) -> list[Coroutine[Any, Any, None]]:
        """The coroutines to run side by side; the session ends when the first one returns or raises."""
        raise NotImplementedError

    async def run(self) -> None:
        """Run the loops, then close the socket with the code the ending explains."""
        tasks = [asyncio.create_task(c) for c in self.loops()]
        stopper = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (*tasks, stopper):
                task.cancel()
            await asyncio.gather(*tasks, stopper, return_exceptions=True)
            await self.wind_down()
        code, reason = self._ending(done)
        await self.conn.close(code, reason)

    async def wind_down(self) -> None:
        """Finish work the loops started (after they stopped, before the close); bounded, never raises."""

    def _ending(self, done: set[asyncio.Task[Any]]) -> tuple[int, str]:
        if self._close_request is not None:
            return self._close_request
        for task in done:
            if task.cancelled():
                continue
            exc = task.exception()
            if exc is None:
                continue
            if isinstance(exc, SessionClosed):
                return exc.code, exc.reason
            if isinstance(exc, PeerGoneError):
                return CloseCode.NORMAL, ""
            logger.error(
                "ws session failed; closing it with 1011",
                exc_info=exc,
                extra=self.log_context(),
            )
            return CloseCode.INTERNAL_ERROR, "internal error"
        return CloseCode.NORMAL, ""
