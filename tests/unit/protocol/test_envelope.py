from __future__ import annotations

import json
import uuid
from typing import Any

import msgspec
import pytest

from protocol.envelope import (
    AGENT_SENDS,
    CLIENT_SENDS,
    SERVER_SENDS,
    decode_frame,
    decode_payload,
    encode_raw_frame,
    new_frame_id,
    payload_type_for,
)
from protocol.errors import CLOSE_INVALID_PAYLOAD, CLOSE_MESSAGE_TOO_BIG, ErrorCode, InvalidUtf8Error, ProtocolError
from protocol.limits import (
    MAX_AGENT_FRAME_BYTES,
    MAX_CLIENT_FRAME_BYTES,
    MAX_JSON_DEPTH,
    MAX_PROGRESS_BYTES,
    MAX_TASK_OUTPUT_BYTES,
)
from protocol.messages import TaskAccept, TaskCancel, TaskResult, TaskSubmit
from tests.unit.protocol.samples import FRAME_ID, TASK_ID

ACCEPT = {"taskId": TASK_ID, "attempt": 1}


def frame(
    *, type_: Any = "task/accept", payload: Any = None, id_: Any = FRAME_ID, ts: Any = 1_764_000_000, **extra: Any
) -> bytes:
    envelope = {"id": id_, "type": type_, "ts": ts, "payload": ACCEPT if payload is None else payload, **extra}
    return json.dumps(envelope, ensure_ascii=False).encode()


def refused(data: str | bytes, *, max_bytes: int = MAX_AGENT_FRAME_BYTES, **kwargs: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_frame(data, max_bytes=max_bytes, **kwargs)
    return info.value


def test_valid_frame_decodes_to_typed_payload() -> None:
    decoded = decode_frame(frame(), max_bytes=MAX_CLIENT_FRAME_BYTES)

    assert decoded.payload == TaskAccept(task_id=TASK_ID, attempt=1)
    assert decoded.id == FRAME_ID


def test_uppercase_uuid_id_is_accepted_and_canonicalised() -> None:
    assert decode_frame(frame(id_=FRAME_ID.upper()), max_bytes=4096).id == FRAME_ID


def test_unknown_type_names_the_type_field() -> None:
    exc = refused(frame(type_="task/explode"))

    assert exc.code is ErrorCode.VALIDATION_ERROR
    assert exc.details == {"field": "$.type"}
    assert exc.ref == FRAME_ID
    assert exc.close_code is None


def test_wrong_payload_field_type_names_the_payload_field() -> None:
    exc = refused(frame(payload={"taskId": 12, "attempt": 1}))

    assert exc.code is ErrorCode.VALIDATION_ERROR
    assert exc.details == {"field": "$.payload.taskId"}
    assert exc.ref == FRAME_ID


def test_nested_field_error_keeps_msgspec_path() -> None:
    payload = {"runningTasks": [{"taskId": "a", "attempt": 1}, {"taskId": "b", "attempt": "1"}]}

    exc = refused(frame(type_="heartbeat", payload=payload))

    assert exc.details == {"field": "$.payload.runningTasks[1].attempt"}


def test_unknown_payload_field_is_refused() -> None:
    exc = refused(frame(payload={**ACCEPT, "sneaky": True}))

    assert exc.code is ErrorCode.VALIDATION_ERROR
    assert exc.details == {"field": "$.payload.sneaky"}


def test_unknown_envelope_field_is_refused() -> None:
    exc = refused(frame(extra_field=1))

    assert exc.details == {"field": "$.extra_field"}
    assert exc.ref == FRAME_ID


def test_missing_payload_field_is_named() -> None:
    exc = refused(frame(payload={"taskId": TASK_ID}))

    assert exc.code is ErrorCode.VALIDATION_ERROR
    assert exc.details == {"field": "$.payload.attempt"}


def test_missing_envelope_field_is_named() -> None:
    data = json.dumps({"id": FRAME_ID, "type": "task/accept", "payload": ACCEPT}).encode()

    assert refused(data).details == {"field": "$.ts"}


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "", 42, None, "0b5f4e0c-5d1a-4a57-a3b4"])
def test_non_uuid_envelope_id_is_refused(bad_id: Any) -> None:
    exc = refused(frame(id_=bad_id))

    assert exc.code is ErrorCode.VALIDATION_ERROR
    assert exc.details == {"field": "$.id"}
    assert exc.ref is None


@pytest.mark.parametrize("bad_ts", ["1764000000", 1.5, True, None, -1])
def test_ts_must_be_a_non_negative_int(bad_ts: Any) -> None:
    exc = refused(frame(ts=bad_ts))

    assert exc.code is ErrorCode.VALIDATION_ERROR
    assert exc.details == {"field": "$.ts"}


@pytest.mark.parametrize("data", [b"", b"{", b"not json", b"[]", b"null", b'{"id": 1,}'])
def test_malformed_json_is_a_validation_error(data: bytes) -> None:
    exc = refused(data)

    assert exc.code is ErrorCode.VALIDATION_ERROR
    assert exc.details is not None
    assert exc.details["field"].startswith("$")


def test_frame_over_max_bytes_is_refused_before_decoding() -> None:
    # Not even JSON: the size check must come first.
    exc = refused(b"x" * (MAX_CLIENT_FRAME_BYTES + 1), max_bytes=MAX_CLIENT_FRAME_BYTES)

    assert exc.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert exc.close_code == CLOSE_MESSAGE_TOO_BIG
    assert exc.details == {"field": "$", "limit": MAX_CLIENT_FRAME_BYTES}


def test_text_frame_size_counts_utf8_bytes_not_characters() -> None:
    # 30,000 three-byte characters: under the limit in characters, over it in bytes.
    text = frame(payload={**ACCEPT, "x": "€" * 30_000}).decode()
    assert len(text) < MAX_CLIENT_FRAME_BYTES < len(text.encode())

    exc = refused(text, max_bytes=MAX_CLIENT_FRAME_BYTES)

    assert exc.code is ErrorCode.PAYLOAD_TOO_LARGE


def test_frame_at_exactly_max_bytes_is_decoded() -> None:
    data = frame()
    assert decode_frame(data, max_bytes=len(data)).payload == TaskAccept(task_id=TASK_ID, attempt=1)


@pytest.mark.parametrize("depth", [10_000, 100_000])
def test_very_deep_nesting_is_a_clean_protocol_error(depth: int) -> None:
    deep = b"[" * depth + b"]" * depth
    data = b'{"id":"%s","type":"task/result","ts":1,"payload":{"taskId":"t","attempt":1,"output":%s}}' % (
        FRAME_ID.encode(),
        deep,
    )

    exc = refused(data, max_bytes=len(data))

    assert exc.code is ErrorCode.VALIDATION_ERROR
    assert exc.details is not None
    assert exc.details["maxDepth"] == MAX_JSON_DEPTH


def test_deep_nesting_in_the_envelope_itself_is_a_clean_protocol_error() -> None:
    exc = refused(b"[" * 10_000 + b"]" * 10_000)

    assert exc.code is ErrorCode.VALIDATION_ERROR


def test_nesting_just_past_the_depth_limit_is_refused_and_just_under_is_accepted() -> None:
    def result_frame(levels: int) -> bytes:
        return frame(type_="task/result", payload={**ACCEPT, "output": json.loads("[" * levels + "]" * levels)})

    # Depth 1 is the envelope, 2 the payload, so the output may nest MAX_JSON_DEPTH - 2 levels.
    assert decode_frame(result_frame(MAX_JSON_DEPTH - 2), max_bytes=MAX_AGENT_FRAME_BYTES).type == "task/result"
    exc = refused(result_frame(MAX_JSON_DEPTH - 1))
    assert exc.details == {"field": "$.payload", "maxDepth": MAX_JSON_DEPTH}
    assert exc.ref == FRAME_ID


def nested(levels: int, *, innermost_array: bool = False) -> Any:
    """Arrays and objects alternating, `levels` deep: [{"k": [{"k": ... 1}]}]."""
    value: Any = 1
    for level in range(levels):
        value = [value] if (level % 2 == 0) == innermost_array else {"k": value}
    return value


@pytest.mark.parametrize("innermost_array", [True, False])
def test_alternating_arrays_and_objects_count_one_level_each(innermost_array: bool) -> None:
    # Envelope and payload are levels 1 and 2: the output may take MAX_JSON_DEPTH - 2 more.
    levels = MAX_JSON_DEPTH - 2
    accepted = frame(type_="task/result", payload={**ACCEPT, "output": nested(levels, innermost_array=innermost_array)})
    too_deep = frame(
        type_="task/result", payload={**ACCEPT, "output": nested(levels + 1, innermost_array=innermost_array)}
    )

    assert decode_frame(accepted, max_bytes=MAX_AGENT_FRAME_BYTES).type == "task/result"
    assert refused(too_deep).details == {"field": "$.payload", "maxDepth": MAX_JSON_DEPTH}


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = '[[{"\\"\\\\[' * 200
    data = frame(type_="task/result", payload={**ACCEPT, "output": {"text": text, "list": [[["x"]]]}})

    decoded = decode_frame(data, max_bytes=MAX_AGENT_FRAME_BYTES)

    assert decoded.payload == TaskResult(task_id=TASK_ID, attempt=1, output={"text": text, "list": [[["x"]]]})


def test_decode_payload_alone_allows_the_same_nesting_as_inside_a_frame() -> None:
    ok = msgspec.json.encode({**ACCEPT, "output": nested(MAX_JSON_DEPTH - 2)})
    deep = msgspec.json.encode({**ACCEPT, "output": nested(MAX_JSON_DEPTH - 1)})

    assert isinstance(decode_payload("task/result", ok), TaskResult)
    with pytest.raises(ProtocolError) as info:
        decode_payload("task/result", deep)
    assert info.value.details == {"field": "$", "maxDepth": MAX_JSON_DEPTH}


@pytest.mark.parametrize(
    "data",
    [
        b'{"id":"%s","type":"task/accept","ts":1,"payload":{"taskId":"\xff","attempt":1}}' % FRAME_ID.encode(),
        b'{"id":"%s","type":"task/result","ts":1,"payload":{"taskId":"t","attempt":1,"output":"\xed\xa0\x80"}}'
        % FRAME_ID.encode(),
        b'\xfe{"id":"%s"}' % FRAME_ID.encode(),
        b'{"id":"%s","type":"task/accept","ts":1,"payload":{"taskId":"t","attempt":1}, "\xc3":1}' % FRAME_ID.encode(),
    ],
    ids=["in-envelope-string", "surrogate-in-payload", "outside-strings", "truncated-sequence-in-key"],
)
def test_invalid_utf8_bytes_raise_the_distinct_error(data: bytes) -> None:
    exc = refused(data)

    assert isinstance(exc, InvalidUtf8Error)
    assert exc.close_code == CLOSE_INVALID_PAYLOAD


def test_lone_surrogate_in_text_raises_the_distinct_error() -> None:
    envelope = {"id": FRAME_ID, "type": "task/accept", "ts": 1, "payload": {"taskId": "\ud800", "attempt": 1}}
    text = json.dumps(envelope, ensure_ascii=False)

    assert isinstance(refused(text), InvalidUtf8Error)


def test_type_not_accepted_from_this_peer_is_refused_before_its_payload() -> None:
    # A client may not send task/accept, even a valid one.
    exc = refused(frame(), accept=CLIENT_SENDS)

    assert exc.code is ErrorCode.VALIDATION_ERROR
    assert exc.details == {"field": "$.type"}


def test_direction_sets_cover_every_type() -> None:
    assert AGENT_SENDS <= SERVER_SENDS | AGENT_SENDS
    assert "task/result" in AGENT_SENDS - SERVER_SENDS
    assert "subscribe" in CLIENT_SENDS - SERVER_SENDS
    assert "task/submit" in SERVER_SENDS - AGENT_SENDS - CLIENT_SENDS


def test_progress_payload_over_its_limit_is_refused_without_closing() -> None:
    payload = {**ACCEPT, "data": "x" * MAX_PROGRESS_BYTES}

    exc = refused(frame(type_="task/progress", payload=payload))

    assert exc.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert exc.close_code is None
    assert exc.ref == FRAME_ID


def test_oversized_result_names_its_task_so_the_server_can_record_it() -> None:
    payload = {**ACCEPT, "output": "x" * MAX_TASK_OUTPUT_BYTES}

    exc = refused(frame(type_="task/result", payload=payload))

    assert exc.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert exc.details is not None
    assert exc.details["taskId"] == TASK_ID
    assert exc.details["attempt"] == 1
    assert exc.details["type"] == "task/result"


def test_raw_frame_wraps_a_stored_payload_without_reencoding() -> None:
    stored = b'{"taskId":"%s","attempt":2,"reason":"canceled by owner"}' % TASK_ID.encode()

    data = encode_raw_frame("task/cancel", stored, frame_id=FRAME_ID, ts=5)

    assert stored in data
    decoded = decode_frame(data, max_bytes=4096)
    assert decoded.payload == TaskCancel(task_id=TASK_ID, attempt=2, reason="canceled by owner")
    assert (decoded.id, decoded.ts) == (FRAME_ID, 5)


def test_decode_payload_alone_uses_root_paths() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_payload("task/accept", b'{"taskId":"t"}')

    assert info.value.details == {"field": "$.attempt"}


def test_decode_payload_alone_round_trips() -> None:
    submit = TaskSubmit(task_id="t", attempt=1, type="noop", input=[1], priority=1, timeout_seconds=5)

    assert decode_payload("task/submit", msgspec.json.encode(submit)) == submit


def test_payload_type_for_unknown_type_is_a_protocol_error() -> None:
    assert payload_type_for("task/submit") is TaskSubmit
    with pytest.raises(ProtocolError) as info:
        payload_type_for("nope")
    assert info.value.details == {"field": "$.type"}


def test_error_text_and_field_path_are_clipped_when_the_peer_sends_huge_names() -> None:
    long_type = refused(frame(type_="x" * 100_000))
    long_key = refused(frame(payload={**ACCEPT, "k" * 100_000: 1}))

    for exc in (long_type, long_key):
        assert len(exc.message) <= 300
        assert exc.details is not None
        assert len(exc.details["field"]) <= 200
    assert long_key.details is not None
    assert long_key.details["field"].startswith("$.payload.kkk")


def test_new_frame_ids_are_canonical_random_uuids() -> None:
    ids = [new_frame_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for frame_id in ids:
        parsed = uuid.UUID(frame_id)
        assert str(parsed) == frame_id  # canonical text: lower case, dashes where decode_frame writes them
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
    # Every variant digit occurs (the two random bits under the variant's fixed ones are used).
    assert {frame_id[19] for frame_id in ids} == set("89ab")
