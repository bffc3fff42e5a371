"""`batch` frames: items decode as strictly as frames of their own, one bad item never sinks the others."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from protocol._checks import nesting_exceeds
from protocol.envelope import AGENT_SENDS, decode_batch, decode_frame, encode_batch, encode_payload
from protocol.errors import ErrorCode, ProtocolError
from protocol.limits import MAX_AGENT_FRAME_BYTES, MAX_BATCH_FRAMES, MAX_JSON_DEPTH
from protocol.messages import AuthOk, Batch, TaskAccept, TaskResult

AGENT_BATCH = AGENT_SENDS | {"batch"}


def _batch(*items: tuple[str, bytes]) -> bytes:
    return encode_batch([(kind, payload, None) for kind, payload in items])  # type: ignore[misc]


def test_items_come_back_in_order_with_their_own_ids_and_types() -> None:
    accept = encode_payload(TaskAccept(task_id="t1", attempt=1))
    result = encode_payload(TaskResult(task_id="t1", attempt=1, output={"n": 1}))
    frame = decode_frame(
        _batch(("task/accept", accept), ("task/result", result)), max_bytes=MAX_AGENT_FRAME_BYTES, accept=AGENT_BATCH
    )

    items = decode_batch(frame, accept=AGENT_SENDS)

    assert [type(i.payload) for i in items if not isinstance(i, ProtocolError)] == [TaskAccept, TaskResult]
    ids = {i.id for i in items if not isinstance(i, ProtocolError)}
    assert len(ids) == 2
    assert all(uuid.UUID(i) for i in ids)


def test_a_bad_item_is_answered_alone_and_names_its_place() -> None:
    good = encode_payload(TaskAccept(task_id="t1", attempt=1))
    frame = decode_frame(
        _batch(("task/accept", good), ("task/accept", b'{"taskId":"t1","attempt":"1"}'), ("auth/ok", good)),
        max_bytes=MAX_AGENT_FRAME_BYTES,
        accept=AGENT_BATCH,
    )

    first, second, third = decode_batch(frame, accept=AGENT_SENDS)

    assert not isinstance(first, ProtocolError)
    assert isinstance(second, ProtocolError)
    assert second.code is ErrorCode.VALIDATION_ERROR
    assert second.details == {"field": "$.payload.frames[1].payload.attempt"}
    assert isinstance(third, ProtocolError)
    assert third.details == {"field": "$.payload.frames[2].type"}
    assert second.ref is not None
    assert third.ref is not None


def test_batches_do_not_nest_and_need_the_feature() -> None:
    inner = _batch(("task/accept", encode_payload(TaskAccept(task_id="t1", attempt=1))))
    inner_payload = msgspec.json.decode(inner)["payload"]
    outer = _batch(("batch", msgspec.json.encode(inner_payload)))

    with pytest.raises(ProtocolError) as caught:
        decode_frame(outer, max_bytes=MAX_AGENT_FRAME_BYTES, accept=AGENT_SENDS)
    assert caught.value.details == {"field": "$.type"}
    (only,) = decode_batch(decode_frame(outer, max_bytes=MAX_AGENT_FRAME_BYTES, accept=AGENT_BATCH))
    assert isinstance(only, ProtocolError)


def test_item_payload_limits_apply_inside_a_batch() -> None:
    big = msgspec.json.encode({"taskId": "t1", "attempt": 1, "data": "x" * 20_000})
    frame = decode_frame(_batch(("task/progress", big)), max_bytes=MAX_AGENT_FRAME_BYTES, accept=AGENT_BATCH)

    (item,) = decode_batch(frame, accept=AGENT_SENDS)

    assert isinstance(item, ProtocolError)
    assert item.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert item.details is not None
    assert item.details["taskId"] == "t1"


def test_empty_or_oversized_batches_are_refused() -> None:
    empty = b'{"id":"%s","type":"batch","ts":1,"payload":{"frames":[]}}' % str(uuid.uuid4()).encode()
    with pytest.raises(ProtocolError):
        decode_frame(empty, max_bytes=MAX_AGENT_FRAME_BYTES, accept=AGENT_BATCH)
    accept = encode_payload(TaskAccept(task_id="t1", attempt=1))
    too_many = _batch(*[("task/accept", accept)] * (MAX_BATCH_FRAMES + 1))
    with pytest.raises(ProtocolError):
        decode_frame(too_many, max_bytes=10 * MAX_AGENT_FRAME_BYTES, accept=AGENT_BATCH)


def test_auth_ok_leaves_features_out_unless_asked() -> None:
    plain = AuthOk(role="agent", subject_id="a", session_id="s", heartbeat_interval_s=1, heartbeat_timeout_s=3)
    assert b"features" not in encode_payload(plain)
    assert isinstance(Batch, type)


def test_a_frame_encoded_alone_fits_in_a_batch_as_it_is() -> None:
    from protocol.envelope import encode_frame

    single = encode_frame(TaskAccept(task_id="t1", attempt=1))
    batch = b'{"id":"%s","type":"batch","ts":1,"payload":{"frames":[%s,%s]}}' % (
        str(uuid.uuid4()).encode(),
        single,
        encode_frame(TaskResult(task_id="t1", attempt=1, output=None)),
    )
    items = decode_batch(decode_frame(batch, max_bytes=MAX_AGENT_FRAME_BYTES, accept=AGENT_BATCH))
    assert [type(i.payload) for i in items if not isinstance(i, ProtocolError)] == [TaskAccept, TaskResult]


def _result_with_output_levels(levels: int) -> bytes:
    output = msgspec.json.decode(b"[" * levels + b"]" * levels) if levels else "x"
    return encode_payload(TaskResult(task_id="t1", attempt=1, output=output))


@pytest.mark.parametrize("levels", [0, 1, MAX_JSON_DEPTH - 6, MAX_JSON_DEPTH - 5, MAX_JSON_DEPTH - 4, 200])
def test_a_batch_is_refused_for_nesting_exactly_when_the_whole_frame_nests_too_deep(levels: int) -> None:
    # The batch's depth is checked item by item; it must refuse exactly the frames the scan of the whole
    # frame refuses, with the same error (the frame's id, field `$.payload`), whichever item nests deepest.
    small = encode_payload(TaskAccept(task_id="t1", attempt=1))
    tricky = encode_payload(TaskResult(task_id="t1", attempt=1, output={"text": "[[{" * 100}))
    data = _batch(
        *[("task/accept", small)] * 50, ("task/result", tricky), ("task/result", _result_with_output_levels(levels))
    )
    whole_frame_too_deep = nesting_exceeds(data, MAX_JSON_DEPTH)

    if whole_frame_too_deep:
        with pytest.raises(ProtocolError) as caught:
            decode_frame(data, max_bytes=MAX_AGENT_FRAME_BYTES, accept=AGENT_BATCH)
        assert caught.value.code is ErrorCode.VALIDATION_ERROR
        assert caught.value.details == {"field": "$.payload", "maxDepth": MAX_JSON_DEPTH}
        assert caught.value.ref == str(uuid.UUID(msgspec.json.decode(data)["id"]))
    else:
        frame = decode_frame(data, max_bytes=MAX_AGENT_FRAME_BYTES, accept=AGENT_BATCH)
        assert len(decode_batch(frame, accept=AGENT_SENDS)) == 52
    # Depth: envelope, batch payload, frames, item, then the payload (1) and its output's `levels`.
    assert whole_frame_too_deep == (4 + 1 + levels > MAX_JSON_DEPTH)
