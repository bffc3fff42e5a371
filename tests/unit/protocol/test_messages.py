from __future__ import annotations

from typing import get_args

import msgspec
import pytest

from protocol.envelope import MESSAGE_TYPES, MessageType, decode_frame, decode_payload, encode_frame, encode_payload
from protocol.errors import ErrorCode, ProtocolError
from protocol.limits import MAX_AGENT_FRAME_BYTES
from protocol.messages import (
    ErrorFrame,
    Message,
    Subscribe,
    TaskError,
    TaskProgress,
    TaskStream,
    TaskSubmit,
    Unsubscribe,
)
from tests.unit.protocol.samples import FRAME_ID, SAMPLES, TASK_ID

ALL_SAMPLES = [(name, message) for name, messages in SAMPLES.items() for message in messages]


def test_samples_cover_every_message_type() -> None:
    assert set(SAMPLES) == set(get_args(MessageType)) == set(MESSAGE_TYPES)


@pytest.mark.parametrize(("message_type", "message"), ALL_SAMPLES, ids=[n for n, _ in ALL_SAMPLES])
def test_every_message_round_trips_through_a_frame(message_type: MessageType, message: Message) -> None:
    data = encode_frame(message, frame_id=FRAME_ID, ts=1_764_000_000)

    frame = decode_frame(data, max_bytes=MAX_AGENT_FRAME_BYTES)

    assert frame.id == FRAME_ID
    assert frame.type == message_type
    assert frame.ts == 1_764_000_000
    assert type(frame.payload) is type(message)
    assert frame.payload == message


@pytest.mark.parametrize(("message_type", "message"), ALL_SAMPLES, ids=[n for n, _ in ALL_SAMPLES])
def test_every_message_round_trips_as_text(message_type: MessageType, message: Message) -> None:
    text = encode_frame(message).decode()

    assert decode_frame(text, max_bytes=MAX_AGENT_FRAME_BYTES).payload == message


def test_wire_names_are_camel_case_and_defaults_are_left_out() -> None:
    message = TaskError(task_id=TASK_ID, attempt=1, error="x", message="m", retry_delay_s=1.0)

    wire = msgspec.json.decode(encode_payload(message))

    assert wire == {"taskId": TASK_ID, "attempt": 1, "error": "x", "message": "m", "retryDelayS": 1.0}


def test_envelope_fields_in_order_with_fresh_uuid_and_int_ts() -> None:
    wire = msgspec.json.decode(encode_frame(TaskProgress(task_id=TASK_ID, attempt=1)))

    assert list(wire) == ["id", "type", "ts", "payload"]
    assert isinstance(wire["ts"], int)
    assert len(wire["id"]) == 36
    assert wire["type"] == "task/progress"


def test_task_error_is_retryable_unless_said_otherwise() -> None:
    frame = decode_frame(
        b'{"id":"%s","type":"task/error","ts":1,"payload":{"taskId":"t1","attempt":1,"error":"e","message":"m"}}'
        % FRAME_ID.encode(),
        max_bytes=4096,
    )

    assert isinstance(frame.payload, TaskError)
    assert frame.payload.retryable is True
    assert frame.payload.retry_delay_s is None


def test_task_status_at_is_rfc3339_with_offset() -> None:
    wire = msgspec.json.decode(encode_payload(SAMPLES["task/status"][0]))

    assert wire["at"] == "2026-11-25T05:00:00.123000Z"


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"task_id": TASK_ID, "all": True},
        {"all": True, "last_seq": 3},
        {"session_id": 1001, "task_id": TASK_ID},
        {"session_id": 1001, "last_seq": 3},
    ],
    ids=["neither", "both", "lastSeq-without-taskId", "session-and-task", "lastSeq-with-session"],
)
def test_subscribe_needs_exactly_one_target(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Subscribe(**kwargs)  # type: ignore[arg-type]


def test_unsubscribe_needs_exactly_one_target() -> None:
    with pytest.raises(ValueError):
        Unsubscribe()
    with pytest.raises(ValueError):
        Unsubscribe(session_id=1, all=True)


def test_error_frame_from_protocol_error_carries_code_details_and_ref() -> None:
    exc = ProtocolError(ErrorCode.STALE_ATTEMPT, "attempt 1 is stale", {"taskId": TASK_ID}, ref=FRAME_ID)

    frame = ErrorFrame.from_error(exc)

    assert frame == ErrorFrame(
        error="stale_attempt", message="attempt 1 is stale", code=3002, details={"taskId": TASK_ID}, ref=FRAME_ID
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("task_id", "x" * 65),
        ("task_id", ""),
        ("task_id", "has space"),
        ("task_id", "{hashtag}"),
        ("type", "t" * 129),
        ("priority", 10),
        ("priority", -1),
        ("attempt", -1),
        ("timeout_seconds", 0),
    ],
)
def test_submit_fields_are_bounded(field: str, value: object) -> None:
    fields = {
        "taskId": TASK_ID,
        "attempt": 1,
        "type": "llm.chat",
        "input": {},
        "priority": 5,
        "timeoutSeconds": 30,
    }
    wire_name = {"task_id": "taskId", "timeout_seconds": "timeoutSeconds"}.get(field, field)
    fields[wire_name] = value

    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode(fields), type=TaskSubmit)


def test_error_message_is_bounded() -> None:
    payload = {"taskId": TASK_ID, "attempt": 1, "error": "e", "message": "m" * 2001}

    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode(payload), type=TaskError)


def test_stream_piece_needs_text_and_a_non_negative_offset() -> None:
    for bad in (
        {"taskId": "t", "attempt": 1, "offset": 0, "delta": ""},
        {"taskId": "t", "attempt": 1, "offset": -1, "delta": "x"},
        {"taskId": "t", "attempt": 1, "delta": "x"},
    ):
        with pytest.raises(ProtocolError) as caught:
            decode_payload("task/stream", msgspec.json.encode(bad))
        assert caught.value.code.error == "validation_error"
    piece = decode_payload("task/stream", b'{"taskId":"t","attempt":1,"offset":3,"delta":"lo"}')
    assert piece == TaskStream(task_id="t", attempt=1, offset=3, delta="lo")
