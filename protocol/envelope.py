"""The frame envelope, the list of wire type strings, and frame encoding/decoding.

Decoding is two-step and strict: the envelope with a raw payload (after a size check on the raw bytes),
then the payload with the decoder for its type. Every failure is a `ProtocolError`; nothing else escapes.
"""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import msgspec

from protocol.errors import CLOSE_MESSAGE_TOO_BIG, ErrorCode, InvalidUtf8Error, ProtocolError
from protocol.limits import MAX_JSON_DEPTH, MAX_PROGRESS_BYTES, MAX_TASK_OUTPUT_BYTES
from protocol.messages import (
    Ack,
    AgentStatus,
    AuthError,
    AuthOk,
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
    TaskSubmit,
    Unsubscribe,
)

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

__all__ = (
    "AGENT_SENDS",
    "CLIENT_SENDS",
    "MESSAGE_TYPES",
    "PAYLOAD_LIMITS",
    "SERVER_SENDS",
    "Envelope",
    "Frame",
    "MessageType",
    "decode_frame",
    "decode_payload",
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
    "task/result",
    "task/error",
    "task/cancel",
    "task/status",
    "subscribe",
    "unsubscribe",
    "ack",
    "error",
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
        "task/result": TaskResult,
        "task/error": TaskError,
        "task/cancel": TaskCancel,
        "task/status": TaskStatusEvent,
        "subscribe": Subscribe,
        "unsubscribe": Unsubscribe,
        "ack": Ack,
        "error": ErrorFrame,
    }
)
"""Wire type string -> payload Struct."""

_TYPE_OF: dict[type[Message], MessageType] = {cls: name for name, cls in MESSAGE_TYPES.items()}

AGENT_SENDS: frozenset[MessageType] = frozenset(
    {"heartbeat", "task/accept", "task/progress", "task/result", "task/error"}
)
"""Types an agent may send; the server refuses the rest."""
CLIENT_SENDS: frozenset[MessageType] = frozenset({"heartbeat", "subscribe", "unsubscribe"})
"""Types a client may send; the server refuses the rest."""
SERVER_SENDS: frozenset[MessageType] = frozenset(get_args(MessageType)) - {
    "task/accept",
    "task/result",
    "task/error",
    "subscribe",
    "unsubscribe",
}
"""Types the server sends."""

PAYLOAD_LIMITS: Mapping[MessageType, int] = MappingProxyType(
    {"task/progress": MAX_PROGRESS_BYTES, "task/result": MAX_TASK_OUTPUT_BYTES}
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


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame: envelope fields plus the typed payload."""

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


class _IdOnly(msgspec.Struct):
    # Lenient read of a refused frame's id, so the error frame can name it in `ref`.
    id: Any = None


class _LooseTaskRef(msgspec.Struct, rename="camel"):
    # Lenient read of an oversized payload's task, so the server can record `payload_too_large` on it.
    task_id: Any = None
    attempt: Any = None


_ENCODER = msgspec.json.Encoder()
_ENVELOPE_DECODER = msgspec.json.Decoder(Envelope)
_PAYLOAD_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    name: msgspec.json.Decoder(cls) for name, cls in MESSAGE_TYPES.items()
}
_ID_DECODER = msgspec.json.Decoder(_IdOnly)
_REF_DECODER = msgspec.json.Decoder(_LooseTaskRef)
_MAX_ERROR_TEXT = 300
_MAX_FIELD_PATH = 200
_AT_PATH = re.compile(r"^(?P<msg>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)
_STRING_LITERAL = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_INNERMOST_PAIR = re.compile(rb"\[\]|\{\}")
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_NAMED_FIELD = re.compile(r"(?:missing required field|contains unknown field) `(?P<name>[^`]+)`")


def new_frame_id() -> str:
    """Return a fresh envelope id."""
    return str(uuid.uuid4())


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
    raw = _to_bytes(data, max_bytes)
    try:
        envelope = _ENVELOPE_DECODER.decode(raw)
    except RecursionError:
        raise _too_deep("$", _read_ref(raw)) from None
    except UnicodeDecodeError as exc:
        raise InvalidUtf8Error() from exc
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        if not _is_utf8(raw):
            raise InvalidUtf8Error() from exc
        raise _translate(exc, "$", _read_ref(raw)) from exc
    ref = str(envelope.id)
    if accept is not None and envelope.type not in accept:
        raise ProtocolError(
            ErrorCode.VALIDATION_ERROR,
            f"type {envelope.type!r} is not accepted from this peer",
            {"field": "$.type"},
            ref=ref,
        )
    payload = _decode_payload(envelope.type, envelope.payload, "$.payload", ref)
    if _may_nest_deeper(raw, MAX_JSON_DEPTH) and _nesting_exceeds(raw, MAX_JSON_DEPTH):
        # The envelope is level 1, so the payload may nest MAX_JSON_DEPTH - 1 levels.
        raise _too_deep("$.payload", ref)
    return Frame(id=ref, type=envelope.type, ts=envelope.ts, payload=payload)


def decode_payload(message_type: str, payload_json: bytes | str) -> Message:
    """Decode a payload alone (e.g. one stored in Redis), as strictly as inside a frame.

    Raises:
        ProtocolError: unknown type, payload over its type's limit, or `validation_error` naming the field.
    """
    raw = payload_json.encode() if isinstance(payload_json, str) else payload_json
    payload = _decode_payload(message_type, raw, "$", None)
    # Limit one less than in a frame: a payload accepted inside an envelope is accepted alone too.
    if _may_nest_deeper(raw, MAX_JSON_DEPTH - 1) and _nesting_exceeds(raw, MAX_JSON_DEPTH - 1):
        raise _too_deep("$", None)
    return payload


def _decode_payload(message_type: str, raw: bytes, base: str, ref: str | None) -> Message:
    payload_type_for(message_type)  # unknown type -> ProtocolError
    limit = PAYLOAD_LIMITS.get(message_type)  # type: ignore[call-overload]
    if limit is not None and len(raw) > limit:
        details: dict[str, Any] = {"field": base, "limit": limit, "size": len(raw), "type": message_type}
        details.update(_read_task_ref(raw))
        raise ProtocolError(
            ErrorCode.PAYLOAD_TOO_LARGE, f"{message_type} payload is larger than {limit} bytes", details, ref=ref
        )
    try:
        result: Message = _PAYLOAD_DECODERS[message_type].decode(raw)
    except RecursionError:
        raise _too_deep(base, ref) from None
    except UnicodeDecodeError as exc:
        raise InvalidUtf8Error() from exc
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise _translate(exc, base, ref) from exc
    return result


def _to_bytes(data: str | bytes, max_bytes: int) -> bytes:
    if isinstance(data, str):
        # Every character is at least one UTF-8 byte: refuse long text before paying for the encode.
        if len(data) > max_bytes:
            raise _too_large(max_bytes)
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates
            raise InvalidUtf8Error() from exc
    else:
        raw = bytes(data)
    if len(raw) > max_bytes:
        raise _too_large(max_bytes)
    return raw


def _too_large(max_bytes: int) -> ProtocolError:
    return ProtocolError(
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"frame is larger than {max_bytes} bytes",
        {"field": "$", "limit": max_bytes},
        close_code=CLOSE_MESSAGE_TOO_BIG,
    )


def _too_deep(field: str, ref: str | None) -> ProtocolError:
    return ProtocolError(
        ErrorCode.VALIDATION_ERROR,
        f"JSON nested deeper than {MAX_JSON_DEPTH} levels",
        {"field": field, "maxDepth": MAX_JSON_DEPTH},
        ref=ref,
    )


def _translate(exc: msgspec.DecodeError | msgspec.ValidationError, base: str, ref: str | None) -> ProtocolError:
    """Turn a msgspec error into a `validation_error` whose `field` is the full path from the frame root.

    Both are clipped: msgspec quotes the peer's own values and keys, which may be as long as the frame.
    """
    text = str(exc)
    if not isinstance(exc, msgspec.ValidationError):  # malformed JSON, not a schema mismatch
        return ProtocolError(ErrorCode.VALIDATION_ERROR, _clip(text, _MAX_ERROR_TEXT), {"field": base}, ref=ref)
    match = _AT_PATH.match(text)
    message, path = (match.group("msg"), match.group("path")) if match else (text, None)
    field = base + (path[1:] if path else "")
    named = _NAMED_FIELD.search(message)
    if named:
        field = f"{field}.{named.group('name')}"
    field = _clip(field, _MAX_FIELD_PATH)
    return ProtocolError(
        ErrorCode.VALIDATION_ERROR, _clip(f"{message} at {field}", _MAX_ERROR_TEXT), {"field": field}, ref=ref
    )


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _read_ref(raw: bytes) -> str | None:
    try:
        candidate = _ID_DECODER.decode(raw).id
        return str(uuid.UUID(candidate)) if isinstance(candidate, str) else None
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError, ValueError):
        return None


def _read_task_ref(raw: bytes) -> dict[str, Any]:
    try:
        loose = _REF_DECODER.decode(raw)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return {}
    found: dict[str, Any] = {}
    if isinstance(loose.task_id, str) and len(loose.task_id) <= 64:
        found["taskId"] = loose.task_id
    if isinstance(loose.attempt, int) and not isinstance(loose.attempt, bool):
        found["attempt"] = loose.attempt
    return found


def _may_nest_deeper(raw: bytes, limit: int) -> bool:
    # Cheap pre-check: fewer opening brackets than the limit cannot nest past it.
    return raw.count(b"[") + raw.count(b"{") > limit


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _nesting_exceeds(raw: bytes, limit: int) -> bool:
    """Return True when the (well-formed) JSON in `raw` nests arrays/objects deeper than `limit`.

    Works on bytes at C speed instead of walking decoded objects: drop string literals, keep only
    brackets, then peel the innermost pairs once per level. Stops after `limit` levels.
    """
    brackets = _STRING_LITERAL.sub(b"", raw).translate(None, _NOT_BRACKETS)
    for _ in range(limit):
        if not brackets:
            return False
        before = len(brackets)
        # One regex pass removes only the pairs innermost at its start: exactly one level.
        brackets = _INNERMOST_PAIR.sub(b"", brackets)
        if len(brackets) == before:  # unbalanced: cannot happen after a successful decode
            return False
    return bool(brackets)
