"""Cutting an attempt's text stream into `task/stream` pieces: byte offsets and size limits. Pure, no I/O.

A piece holds at most `MAX_STREAM_DELTA_CHARS` characters and its encoded payload stays under
`MAX_STREAM_BYTES` (JSON escapes can grow text, so the check is on the encoded delta). Offsets count UTF-8
bytes, as the server does.
"""

from __future__ import annotations

import msgspec

from protocol.limits import MAX_STREAM_BYTES, MAX_STREAM_DELTA_CHARS

__all__ = ("StreamPiece", "StreamText", "split_pieces")

_PIECE_OVERHEAD_BYTES = 512
"""Room left in `MAX_STREAM_BYTES` for the payload's other fields (task id, attempt, offset, keys)."""
_DELTA_BUDGET_BYTES = MAX_STREAM_BYTES - _PIECE_OVERHEAD_BYTES


class StreamPiece(msgspec.Struct, frozen=True):
    """One `task/stream` piece: `delta` starts `offset` UTF-8 bytes into the attempt's stream."""

    offset: int
    delta: str


def _fits(text: str) -> bool:
    return len(text) <= MAX_STREAM_DELTA_CHARS and len(msgspec.json.encode(text)) <= _DELTA_BUDGET_BYTES


def split_pieces(text: str, offset: int = 0) -> list[StreamPiece]:
    """Cut `text`, which starts `offset` bytes into the stream, into pieces within the protocol's limits."""
    pieces: list[StreamPiece] = []
    pending = [text[i : i + MAX_STREAM_DELTA_CHARS] for i in range(0, len(text), MAX_STREAM_DELTA_CHARS)]
    pending.reverse()
    while pending:
        chunk = pending.pop()
        if not _fits(chunk):
            half = len(chunk) // 2
            pending.extend((chunk[half:], chunk[:half]))
            continue
        pieces.append(StreamPiece(offset, chunk))
        offset += len(chunk.encode())
    return pieces


class StreamText:
    """The text an attempt streamed so far, kept whole so it can be resent from any offset."""

    __slots__ = ("_parts", "length")

    def __init__(self) -> None:
        self._parts: list[str] = []
        self.length = 0
        """UTF-8 bytes so far: the offset of the next piece."""

    def append(self, text: str) -> list[StreamPiece]:
        """Add `text` at the end; returns its pieces."""
        pieces = split_pieces(text, self.length)
        self._parts.append(text)
        self.length += len(text.encode())
        return pieces

    @property
    def text(self) -> str:
        """Everything streamed so far."""
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def pieces_from(self, offset: int = 0) -> list[StreamPiece]:
        """The pieces that resend the stream from byte `offset` (moved back to a character boundary)."""
        data = self.text.encode()
        start = min(max(offset, 0), len(data))
        while 0 < start < len(data) and data[start] & 0xC0 == 0x80:  # inside a character: back to its start
            start -= 1
        return split_pieces(data[start:].decode(), start)
