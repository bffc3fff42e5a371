"""Parsing events stream entries: the in-place read of what Redis sends, and the general path for anything else."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.streams import _fields, event_of, parse_event, stream_events

RAW = {
    b"task_id": b"t1",
    b"owner_id": b"u1",
    b"seq": b"4",
    b"type": b"task/status",
    b"status": b"done",
    b"attempt": b"2",
    b"agent_id": b"a1",
    b"at_ms": b"1700000000123",
    b"reason": b"",
    b"payload": b'{"taskId":"t1"}',
}


def test_an_entry_as_redis_sends_it_parses_like_the_general_path() -> None:
    event = event_of("5-0", RAW)
    assert event == parse_event("5-0", _fields(RAW))
    assert (event.task_id, event.seq, event.status, event.attempt, event.agent_id) == ("t1", 4, "done", 2, "a1")
    assert (event.type, event.reason, event.at_ms, event.payload_json) == (
        "task/status",
        None,
        1700000000123,
        b'{"taskId":"t1"}',
    )


@pytest.mark.parametrize(
    "raw",
    [
        {k.decode(): v for k, v in RAW.items()},  # str names (decode_responses clients)
        {**RAW, b"seq": 4, b"attempt": 2},  # non-bytes values
        [x for pair in RAW.items() for x in pair],  # a flat list of names and values
    ],
)
def test_other_shapes_take_the_general_path(raw: Any) -> None:
    assert event_of("5-0", raw) == parse_event("5-0", _fields(RAW))


def test_optional_fields_may_be_absent_and_the_type_defaults_to_status() -> None:
    raw = {k: v for k, v in RAW.items() if k not in (b"status", b"agent_id", b"reason")}
    event = event_of("1-0", {**raw, b"type": b"task/stream"})
    assert (event.type, event.status, event.agent_id, event.reason) == ("task/stream", None, None, None)
    assert event_of("1-0", {**raw, b"type": b"other"}).type == "task/status"


def test_a_missing_required_field_is_an_error_on_both_paths() -> None:
    raw = {k: v for k, v in RAW.items() if k != b"task_id"}
    with pytest.raises(KeyError):
        event_of("1-0", raw)


def test_a_reply_is_flattened_and_deleted_entries_skipped() -> None:
    reply = [[b"events", [(b"1-0", RAW), (b"2-0", None)]]]
    assert stream_events(reply) == [event_of("1-0", RAW)]
    assert stream_events({b"events": [[(b"1-0", RAW)]]}) == [event_of("1-0", RAW)]  # RESP3 shape
    assert stream_events(None) == []
