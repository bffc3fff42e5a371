from __future__ import annotations

import msgspec
import pytest

from protocol import limits
from protocol.envelope import MESSAGE_TYPES, PAYLOAD_LIMITS
from protocol.messages import ErrorFrame, TaskCancel, TaskError

CONTRACT = {
    "MAX_CLIENT_FRAME_BYTES": 65536,
    "MAX_AGENT_FRAME_BYTES": 1048576,
    "MAX_TASK_INPUT_BYTES": 262144,
    "MAX_TASK_OUTPUT_BYTES": 524288,
    "MAX_PROGRESS_BYTES": 16384,
    "MAX_TYPE_LENGTH": 128,
    "MAX_CAPABILITIES": 32,
    "MAX_CAPABILITY_LENGTH": 64,
    "MAX_BATCH_SIZE": 500,
    "MAX_PRIORITY": 9,
    "MAX_ID_LENGTH": 64,
    "MAX_NAME_LENGTH": 200,
    "MAX_IDEMPOTENCY_KEY_LENGTH": 255,
    "MAX_ERROR_CODE_LENGTH": 64,
    "MAX_MESSAGE_LENGTH": 2000,
    "MAX_STREAM_BYTES": 16384,
    "MAX_STREAM_DELTA_CHARS": 8192,
}


@pytest.mark.parametrize(("name", "value"), CONTRACT.items())
def test_limits_match_the_contract(name: str, value: int) -> None:
    assert getattr(limits, name) == value


def test_per_type_payload_limits_fit_inside_an_agent_frame() -> None:
    assert PAYLOAD_LIMITS == {
        "task/progress": limits.MAX_PROGRESS_BYTES,
        "task/stream": limits.MAX_STREAM_BYTES,
        "task/result": limits.MAX_TASK_OUTPUT_BYTES,
    }
    assert max(PAYLOAD_LIMITS.values()) < limits.MAX_AGENT_FRAME_BYTES


@pytest.mark.parametrize(
    ("struct", "fields"),
    [
        (TaskError, {"taskId": "t", "attempt": 1, "error": "e" * 65, "message": "m"}),
        (TaskError, {"taskId": "t", "attempt": 1, "error": "has space", "message": "m"}),
        (TaskError, {"taskId": "t", "attempt": 1, "error": "e", "message": "m", "retryDelayS": -1}),
        (TaskCancel, {"taskId": "t", "attempt": 1, "reason": "r" * 2001}),
        (ErrorFrame, {"error": "e", "message": "m", "code": 1, "ref": "not-a-uuid"}),
    ],
    ids=["error-name-too-long", "error-name-charset", "negative-retry-delay", "reason-too-long", "ref-not-uuid"],
)
def test_string_and_number_limits_are_enforced_on_decode(
    struct: type[msgspec.Struct], fields: dict[str, object]
) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode(fields), type=struct)


def test_strings_at_their_limit_are_accepted() -> None:
    fields = {"taskId": "t" * 64, "attempt": 1, "error": "e" * 64, "message": "m" * 2000}

    decoded = msgspec.json.decode(msgspec.json.encode(fields), type=TaskError)

    assert (len(decoded.task_id), len(decoded.error), len(decoded.message)) == (64, 64, 2000)


@pytest.mark.parametrize(("message_type", "struct"), MESSAGE_TYPES.items())
def test_every_message_docstring_states_its_wire_type_and_delivery_rule(
    message_type: str, struct: type[msgspec.Struct]
) -> None:
    doc = struct.__doc__ or ""

    assert f"`{message_type}`" in doc
    assert "Delivery:" in doc
