"""The frame envelope, the list of wire type strings, and frame encoding/decoding.

Decoding is two-step and strict: the envelope with a raw payload (after a size check on the raw bytes),
then the payload with the decoder for its type. Every failure is a `ProtocolError`; nothing else escapes.
"""

from __future__ import annotations

import os
import time
import uuid
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import msgspec

from protocol import _checks as checks
from protocol.errors import ErrorCode, InvalidUtf8Error, ProtocolError
from protocol.limits import MAX_JSON_DEPTH, MAX_PROGRESS_BYTES, MAX_STREAM_BYTES, MAX_TASK_OUTPUT_BYTES
from protocol.messages import (
    Ack,
    AgentStatus,
    AuthError,
    AuthOk,
    Batch,
    ErrorFrame,
    Heartbeat,
    Message,
    Subscribe,
    TaskAccept,
    TaskCancel,
    TaskError,
    TaskProgress,
    TaskResult,
    TaskStatusEvent,
    TaskStream,
    TaskSubmit,
    Unsubscribe,
)

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

__all__ = (
    "AGENT_SENDS",
    "CLIENT_SENDS",
    "MESSAGE_TYPES",
    "PAYLOAD_LIMITS",
    "SERVER_SENDS",
    "Envelope",
    "Frame",
    "MessageType",
    "decode_batch",
    "decode_frame",
    "decode_payload",
    "encode_batch",
    "encode_frame",
    "encode_payload",
    "encode_raw_frame",
    "message_type_of",
    "new_frame_id",
    "payload_type_for",
)

MessageType = Literal[
    "auth/ok",
    "auth/error",
    "heartbeat",
    "agent/status",
    "task/submit",
    "task/accept",
    "task/progress",
    "task/stream",
    "task/result",
    "task/error",
    "task/cancel",
    "task/status",
    "subscribe",
    "unsubscribe",
    "ack",
    "error",
    "batch",
]
"""Every wire type string."""

MESSAGE_TYPES: Mapping[MessageType, type[Message]] = MappingProxyType(
    {
        "auth/ok": AuthOk,
        "auth/error": AuthError,
        "heartbeat": Heartbeat,
        "agent/status": AgentStatus,
        "task/submit": TaskSubmit,
        "task/accept": TaskAccept,
        "task/progress": TaskProgress,
        "task/stream": TaskStream,
        "task/result": TaskResult,
        "task/error": TaskError,
        "task/cancel": TaskCancel,
        "task/status": TaskStatusEvent,
        "subscribe": Subscribe,
        "unsubscribe": Unsubscribe,
        "ack": Ack,
        "error": ErrorFrame,
        "batch": Batch,
    }
)
"""Wire type string -> payload Struct."""

_TYPE_OF: dict[type[Message], MessageType] = {cls: name for name, cls in MESSAGE_TYPES.items()}

AGENT_SENDS: frozenset[MessageType] = frozenset(
    {"heartbeat", "task/accept", "task/progress", "task/stream", "task/result", "task/error"}
)
"""Types an agent may send; the server refuses the rest (plus `batch` once negotiated)."""
CLIENT_SENDS: frozenset[MessageType] = frozenset({"heartbeat", "subscribe", "unsubscribe"})
"""Types a client may send; the server refuses the rest (plus `batch` once negotiated)."""
SERVER_SENDS: frozenset[MessageType] = frozenset(get_args(MessageType)) - {
    "task/accept",
    "task/result",
    "task/error",
    "subscribe",
    "unsubscribe",
}
"""Types the server sends."""

PAYLOAD_LIMITS: Mapping[MessageType, int] = MappingProxyType(
    {"task/progress": MAX_PROGRESS_BYTES, "task/stream": MAX_STREAM_BYTES, "task/result": MAX_TASK_OUTPUT_BYTES}
)
"""Largest encoded payload per type, checked on the raw payload bytes before the payload is decoded."""


class Envelope(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Every frame on the wire: `{"id": "<uuid>", "type": "<type>", "ts": <unix seconds>, "payload": {...}}`.

    Decoded first, with the payload left raw; `decode_frame()` then decodes the payload for its type.
    """

    id: uuid.UUID
    """Unique per frame; `ack` and `error` frames name it in `ref`."""
    type: MessageType
    """Which payload follows."""
    ts: Annotated[int, msgspec.Meta(ge=0)]
    """Sender's clock, whole Unix seconds."""
    payload: msgspec.Raw
    """The payload JSON, decoded in a second step."""


class Frame(msgspec.Struct, frozen=True):
    """A decoded frame: envelope fields plus the typed payload (one per frame and per batch item: a Struct,
    whose constructor is cheaper than a frozen dataclass's)."""

    id: str
    """The envelope id, canonical UUID text."""
    type: MessageType
    ts: int
    payload: Message


class _OutEnvelope(msgspec.Struct):
    # Encode-only: the payload is a Struct or msgspec.Raw, never decoded through this class.
    id: str
    type: str
    ts: int
    payload: Any


_ENCODER = msgspec.json.Encoder()
_ENVELOPE_DECODER = msgspec.json.Decoder(Envelope)
_PAYLOAD_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    name: msgspec.json.Decoder(cls) for name, cls in MESSAGE_TYPES.items()
}


def new_frame_id() -> str:
    """Return a fresh envelope id: a random (version 4) UUID as canonical text.

    Formatted from 16 random bytes directly: `str(uuid.uuid4())` builds a UUID object and its int first,
    which costs more than twice as much, and the server makes one or two ids per task (its submits and acks).
    """
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
"""The RFC 4122 variant bits (`10xx`) set in the hex digit that holds them."""


def message_type_of(message: Message) -> MessageType:
    """Return the wire type string of a payload Struct.

    Raises:
        TypeError: `message` is not one of the payload Structs.
    """
    try:
        return _TYPE_OF[type(message)]
    except KeyError:
        raise TypeError(f"not a protocol message: {type(message).__name__}") from None


def payload_type_for(message_type: str) -> type[Message]:
    """Return the payload Struct for a wire type string.

    Raises:
        ProtocolError: `validation_error` for an unknown type.
    """
    try:
        return MESSAGE_TYPES[message_type]  # type: ignore[index]
    except KeyError:
        raise ProtocolError(
            ErrorCode.VALIDATION_ERROR, f"unknown message type {message_type!r}", {"field": "$.type"}
        ) from None


def encode_payload(message: Message) -> bytes:
    """Encode a payload Struct alone (what the scheduler stores and `encode_raw_frame()` wraps)."""
    return _ENCODER.encode(message)


def encode_frame(message: Message, *, frame_id: str | None = None, ts: int | None = None) -> bytes:
    """Encode a payload Struct in its envelope; the type comes from the Struct's class.

    Args:
        message: the payload.
        frame_id: the envelope id; a fresh UUID when None.
        ts: the envelope time in Unix seconds; now when None.

    Returns:
        UTF-8 JSON. Send it as a text frame (`.decode()` it, or websockets' `send(data, text=True)`):
        the server closes binary frames with 1003.
    """
    envelope = _OutEnvelope(
        id=frame_id if frame_id is not None else new_frame_id(),
        type=message_type_of(message),
        ts=ts if ts is not None else int(time.time()),
        payload=message,
    )
    return _ENCODER.encode(envelope)


def encode_raw_frame(
    message_type: MessageType, payload_json: bytes, *, frame_id: str | None = None, ts: int | None = None
) -> bytes:
    """Wrap an already encoded payload in an envelope, without decoding it.

    For payloads that come out of Redis ready-made (inbox entries, watch events). The caller vouches that
    `payload_json` is the encoded payload of `message_type`.
    """
    envelope = _OutEnvelope(
        id=frame_id if frame_id is not None else new_frame_id(),
        type=message_type,
        ts=ts if ts is not None else int(time.time()),
        payload=msgspec.Raw(payload_json),
    )
    return _ENCODER.encode(envelope)


def decode_frame(data: str | bytes, *, max_bytes: int, accept: Collection[str] | None = None) -> Frame:
    """Decode one frame strictly: size first, then the envelope, then the payload for its type.

    Args:
        data: the text frame, as received (str) or as UTF-8 bytes.
        max_bytes: the largest frame this peer may send; checked before any decoding.
        accept: wire types this peer may send (e.g. `AGENT_SENDS`); None accepts every type.

    Raises:
        InvalidUtf8Error: the frame is not valid UTF-8 (close with 1007).
        ProtocolError: `payload_too_large` (frame over `max_bytes`: close with 1009, see `close_code`; or
            payload over its type's limit: answer with an error frame), or `validation_error` with
            `details["field"]` naming the offending field, e.g. `$.payload.taskId`.
    """
    raw = checks.to_bytes(data, max_bytes)
    try:
        envelope = _ENVELOPE_DECODER.decode(raw)
    except RecursionError:
        raise checks.too_deep("$", checks.read_ref(raw)) from None
    except UnicodeDecodeError as exc:
        raise InvalidUtf8Error() from exc
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        if not checks.is_utf8(raw):
            raise InvalidUtf8Error() from exc
        raise checks.translate(exc, "$", checks.read_ref(raw)) from exc
    ref = str(envelope.id)
    if accept is not None and envelope.type not in accept:
        raise ProtocolError(
            ErrorCode.VALIDATION_ERROR,
            f"type {envelope.type!r} is not accepted from this peer",
            {"field": "$.type"},
            ref=ref,
        )
    payload = _decode_payload(envelope.type, envelope.payload, "$.payload", ref)
    if isinstance(payload, Batch):
        # Outside its items' payloads a batch is a fixed `_BATCH_ITEM_LEVELS` deep (unknown fields are refused),
        # so each item payload is checked alone: the scan over a whole batch frame (always bracket-rich, so never
        # spared by the pre-check) cost as much as decoding its items.
        limit = MAX_JSON_DEPTH - _BATCH_ITEM_LEVELS
        too_deep = any(checks.too_nested(bytes(item.payload), limit) for item in payload.frames)
    else:
        too_deep = checks.too_nested(raw, MAX_JSON_DEPTH)
    if too_deep:
        raise checks.too_deep("$.payload", ref)
    return Frame(id=ref, type=envelope.type, ts=envelope.ts, payload=payload)


_BATCH_ITEM_LEVELS = 4
"""Levels above a batch item's payload: the envelope, the batch payload, its `frames` list, the item."""


def decode_payload(message_type: str, payload_json: bytes | str) -> Message:
    """Decode a payload alone (e.g. one stored in Redis), as strictly as inside a frame.

    Raises:
        ProtocolError: unknown type, payload over its type's limit, or `validation_error` naming the field.
    """
    raw = payload_json.encode() if isinstance(payload_json, str) else payload_json
    payload = _decode_payload(message_type, raw, "$", None)
    # Limit one less than in a frame: a payload accepted inside an envelope is accepted alone too.
    if checks.too_nested(raw, MAX_JSON_DEPTH - 1):
        raise checks.too_deep("$", None)
    return payload


def _decode_payload(message_type: str, raw: bytes, base: str, ref: str | None) -> Message:
    payload_type_for(message_type)  # unknown type -> ProtocolError
    limit = PAYLOAD_LIMITS.get(message_type)  # type: ignore[call-overload]
    if limit is not None and len(raw) > limit:
        details: dict[str, Any] = {"field": base, "limit": limit, "size": len(raw), "type": message_type}
        details.update(checks.read_task_ref(raw))
        raise ProtocolError(
            ErrorCode.PAYLOAD_TOO_LARGE, f"{message_type} payload is larger than {limit} bytes", details, ref=ref
        )
    try:
        result: Message = _PAYLOAD_DECODERS[message_type].decode(raw)
    except RecursionError:
        raise checks.too_deep(base, ref) from None
    except UnicodeDecodeError as exc:
        raise InvalidUtf8Error() from exc
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise checks.translate(exc, base, ref) from exc
    return result


def encode_batch(
    items: Sequence[tuple[MessageType, bytes, str | None]], *, frame_id: str | None = None, ts: int | None = None
) -> bytes:
    """Encode a `batch` frame from already encoded payloads: `(type, payload_json, item_id or None)` each.

    The caller vouches for each payload (as with `encode_raw_frame`); a None id gets a fresh one.
    """
    frames = [
        _OutItem(id=item_id if item_id is not None else new_frame_id(), type=kind, payload=msgspec.Raw(payload))
        for kind, payload, item_id in items
    ]
    return encode_raw_frame("batch", _ENCODER.encode(_OutBatch(frames=frames)), frame_id=frame_id, ts=ts)


def decode_batch(frame: Frame, *, accept: Collection[str] | None = None) -> list[Frame | ProtocolError]:
    """Split a decoded `batch` into its items, each decoded as strictly as a frame of its own.

    An item that fails (unknown or refused type, a nested batch, a bad payload) comes back as its
    `ProtocolError` (with `ref` = the item's id) in its place, so the others still apply.
    """
    if not isinstance(frame.payload, Batch):
        raise TypeError("not a batch frame")
    out: list[Frame | ProtocolError] = []
    ts = frame.ts
    for index, item in enumerate(frame.payload.frames):
        ref = str(item.id)
        kind = item.type
        if kind == "batch" or kind not in MESSAGE_TYPES or (accept is not None and kind not in accept):
            out.append(checks.not_accepted_in_batch(kind, index, ref))
            continue
        raw = bytes(item.payload)
        # Once per item: the common case (within its limit, valid) decoded straight; anything else takes
        # `_decode_payload`, which builds the error exactly as for a frame of its own.
        limit = PAYLOAD_LIMITS.get(kind)  # type: ignore[call-overload]
        payload: Message | None
        try:
            payload = _PAYLOAD_DECODERS[kind].decode(raw) if limit is None or len(raw) <= limit else None
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
            payload = None
        if payload is None:
            try:
                payload = _decode_payload(kind, raw, f"$.payload.frames[{index}].payload", ref)
            except ProtocolError as exc:
                out.append(exc)
                continue
        out.append(Frame(id=ref, type=kind, ts=ts, payload=payload))  # type: ignore[arg-type]
    return out


class _OutItem(msgspec.Struct):
    id: str
    type: str
    payload: msgspec.Raw


class _OutBatch(msgspec.Struct):
    frames: list[_OutItem]
