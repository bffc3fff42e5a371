"""Frame checks behind `decode_frame()`: size, UTF-8, nesting depth, and msgspec error translation.

Private to the protocol package; pure functions over bytes and msgspec errors, no I/O.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import msgspec

from protocol.errors import CLOSE_MESSAGE_TOO_BIG, ErrorCode, InvalidUtf8Error, ProtocolError
from protocol.limits import MAX_ID_LENGTH, MAX_JSON_DEPTH

__all__ = (
    "clip",
    "is_utf8",
    "may_nest_deeper",
    "nesting_exceeds",
    "not_accepted_in_batch",
    "read_ref",
    "read_task_ref",
    "to_bytes",
    "too_deep",
    "too_large",
    "too_nested",
    "translate",
)


class _IdOnly(msgspec.Struct):
    # Lenient read of a refused frame's id, so the error frame can name it in `ref`.
    id: Any = None


class _LooseTaskRef(msgspec.Struct, rename="camel"):
    # Lenient read of an oversized payload's task, so the server can record `payload_too_large` on it.
    task_id: Any = None
    attempt: Any = None


_ID_DECODER = msgspec.json.Decoder(_IdOnly)
_REF_DECODER = msgspec.json.Decoder(_LooseTaskRef)
_MAX_ERROR_TEXT = 300
_MAX_FIELD_PATH = 200
_AT_PATH = re.compile(r"^(?P<msg>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)
_STRING_LITERAL = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_INNERMOST_PAIR = re.compile(rb"\[\]|\{\}")
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_NAMED_FIELD = re.compile(r"(?:missing required field|contains unknown field) `(?P<name>[^`]+)`")


def to_bytes(data: str | bytes, max_bytes: int) -> bytes:
    """Return the frame as UTF-8 bytes, refusing it when over `max_bytes` or not encodable."""
    if isinstance(data, str):
        # Every character is at least one UTF-8 byte: refuse long text before paying for the encode.
        if len(data) > max_bytes:
            raise too_large(max_bytes)
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates
            raise InvalidUtf8Error() from exc
    else:
        raw = bytes(data)
    if len(raw) > max_bytes:
        raise too_large(max_bytes)
    return raw


def too_large(max_bytes: int) -> ProtocolError:
    """The error for a frame over the size limit (the socket closes with 1009)."""
    return ProtocolError(
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"frame is larger than {max_bytes} bytes",
        {"field": "$", "limit": max_bytes},
        close_code=CLOSE_MESSAGE_TOO_BIG,
    )


def too_deep(field: str, ref: str | None) -> ProtocolError:
    """The error for JSON nested past `MAX_JSON_DEPTH`."""
    return ProtocolError(
        ErrorCode.VALIDATION_ERROR,
        f"JSON nested deeper than {MAX_JSON_DEPTH} levels",
        {"field": field, "maxDepth": MAX_JSON_DEPTH},
        ref=ref,
    )


def not_accepted_in_batch(kind: str, index: int, ref: str) -> ProtocolError:
    """The error for a batch item of a type this peer may not send in a batch (or a nested batch)."""
    return ProtocolError(
        ErrorCode.VALIDATION_ERROR,
        f"type {kind!r} is not accepted in a batch from this peer",
        {"field": f"$.payload.frames[{index}].type"},
        ref=ref,
    )


def translate(exc: msgspec.DecodeError | msgspec.ValidationError, base: str, ref: str | None) -> ProtocolError:
    """Turn a msgspec error into a `validation_error` whose `field` is the full path from the frame root.

    Both are clipped: msgspec quotes the peer's own values and keys, which may be as long as the frame.
    """
    text = str(exc)
    if not isinstance(exc, msgspec.ValidationError):  # malformed JSON, not a schema mismatch
        return ProtocolError(ErrorCode.VALIDATION_ERROR, clip(text, _MAX_ERROR_TEXT), {"field": base}, ref=ref)
    match = _AT_PATH.match(text)
    message, path = (match.group("msg"), match.group("path")) if match else (text, None)
    field = base + (path[1:] if path else "")
    named = _NAMED_FIELD.search(message)
    if named:
        field = f"{field}.{named.group('name')}"
    field = clip(field, _MAX_FIELD_PATH)
    return ProtocolError(
        ErrorCode.VALIDATION_ERROR, clip(f"{message} at {field}", _MAX_ERROR_TEXT), {"field": field}, ref=ref
    )


def clip(text: str, limit: int) -> str:
    """Shorten `text` to `limit` characters, marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def read_ref(raw: bytes) -> str | None:
    """Best effort: the envelope id of a refused frame, or None."""
    try:
        candidate = _ID_DECODER.decode(raw).id
        return str(uuid.UUID(candidate)) if isinstance(candidate, str) else None
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError, ValueError):
        return None


def read_task_ref(raw: bytes) -> dict[str, Any]:
    """Best effort: `taskId` and `attempt` of a refused payload, as error details."""
    try:
        loose = _REF_DECODER.decode(raw)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return {}
    found: dict[str, Any] = {}
    if isinstance(loose.task_id, str) and len(loose.task_id) <= MAX_ID_LENGTH:
        found["taskId"] = loose.task_id
    if isinstance(loose.attempt, int) and not isinstance(loose.attempt, bool):
        found["attempt"] = loose.attempt
    return found


def may_nest_deeper(raw: bytes, limit: int) -> bool:
    """Cheap pre-check: fewer opening brackets than `limit` cannot nest past it."""
    return raw.count(b"[") + raw.count(b"{") > limit


def too_nested(raw: bytes, limit: int) -> bool:
    """`nesting_exceeds`, behind the cheap pre-check."""
    return may_nest_deeper(raw, limit) and nesting_exceeds(raw, limit)


def is_utf8(raw: bytes) -> bool:
    """Return True when `raw` is valid UTF-8."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def nesting_exceeds(raw: bytes, limit: int) -> bool:
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
