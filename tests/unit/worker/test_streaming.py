"""Stream pieces: byte offsets, the protocol's size limits, resending from an offset."""

from __future__ import annotations

import msgspec

from protocol.limits import MAX_STREAM_BYTES, MAX_STREAM_DELTA_CHARS
from protocol.messages import TaskStream
from worker.streaming import StreamText, split_pieces


def _encoded_size(delta: str) -> int:
    return len(msgspec.json.encode(TaskStream(task_id="t" * 64, attempt=2**53 - 1, offset=2**53 - 1, delta=delta)))


def test_offsets_count_utf8_bytes_of_everything_before() -> None:
    stream = StreamText()
    assert [(p.offset, p.delta) for p in stream.append("héllo")] == [(0, "héllo")]
    assert [(p.offset, p.delta) for p in stream.append(" 世界")] == [(6, " 世界")]
    assert stream.length == 13
    assert stream.text == "héllo 世界"


def test_long_text_is_split_within_the_character_and_payload_limits() -> None:
    for text in ("a" * 20_000, "世" * 20_000, "\x01" * 9000, '"' * 9000):
        pieces = split_pieces(text, 100)
        assert "".join(p.delta for p in pieces) == text
        assert all(len(p.delta) <= MAX_STREAM_DELTA_CHARS for p in pieces)
        assert all(_encoded_size(p.delta) <= MAX_STREAM_BYTES for p in pieces)
        offset = 100
        for piece in pieces:
            assert piece.offset == offset
            offset += len(piece.delta.encode())


def test_pieces_from_an_offset_inside_a_character_start_at_that_character() -> None:
    stream = StreamText()
    stream.append("a世b")
    assert [(p.offset, p.delta) for p in stream.pieces_from(0)] == [(0, "a世b")]
    assert [(p.offset, p.delta) for p in stream.pieces_from(2)] == [(1, "世b")]
    assert [(p.offset, p.delta) for p in stream.pieces_from(4)] == [(4, "b")]
    assert stream.pieces_from(5) == []
