"""JSON request bodies, checked before anything decodes them: media type, size, UTF-8, nesting, strict types.

Litestar decodes a body with msgspec and then converts it to the handler's `data` type with lax rules
(`"5"` becomes 5). A hostile body reaches that decoder from unauthenticated routes, where 50,000 levels of
nesting raise RecursionError and invalid UTF-8 raises UnicodeDecodeError: both escaped as a 500. This route
middleware reads the body once, refuses such bodies with a 4xx in the one error body, decodes it once,
converts it strictly to the handler's `data` type, and leaves the decoded value where Litestar looks first,
so the body is not decoded twice.
"""

from __future__ import annotations

import itertools
import re
from typing import TYPE_CHECKING, Any

import msgspec
from litestar.enums import ScopeType
from litestar.utils.scope.state import ScopeState

from api.errors import ApiError, BadRequestError, PayloadTooLargeError, ValidationFailedError, field_from_message
from protocol.errors import ErrorCode
from protocol.limits import MAX_JSON_DEPTH

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

__all__ = ("MAX_BODY_DEPTH", "guard_json_body", "max_nesting")

MAX_BODY_DEPTH = MAX_JSON_DEPTH - 1
"""Deepest array/object nesting in a request body. One less than a frame's limit: a task's input travels
to its agent one level deeper (inside the frame envelope) than it sits in the request body."""

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# A JSON string literal (escapes included); brackets inside strings are not nesting.
_STRING_LITERAL = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_ALL_BYTES = bytes(range(256))
# Openers become 0x01 and closers 0xFF (-1 as a signed byte); everything else is deleted.
_TO_STEPS = _ALL_BYTES.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(b for b in _ALL_BYTES if b not in b"[]{}")
_DECODER = msgspec.json.Decoder()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def max_nesting(raw: bytes, limit: int) -> int:
    """The deepest array/object nesting in `raw`, counted up to just past `limit` (well-formed or not).

    C-speed work on bytes: drop string literals, keep brackets as +1/-1 steps, take the running maximum.
    A body with no more than `limit` opening brackets cannot nest past it and skips the scan.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return 0
    steps = _STRING_LITERAL.sub(b"", raw).translate(None, _NOT_BRACKETS).translate(_TO_STEPS)
    deepest = 0
    for depth in itertools.accumulate(memoryview(steps).cast("b")):
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


async def _read_body(receive: Receive, max_size: int) -> tuple[bytes, list[ReceiveMessage]]:
    """The whole body (413 past `max_size`), plus the messages read, to replay to the app."""
    chunks: list[bytes] = []
    size = 0
    messages: list[ReceiveMessage] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_size:
            raise PayloadTooLargeError("request body too large", {"maxBytes": max_size})
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), messages


def _data_type(scope: Scope) -> Any:
    handler = scope.get("route_handler")
    signature = getattr(handler, "parsed_fn_signature", None)
    field = signature.parameters.get("data") if signature is not None else None
    return None if field is None else field.annotation


def _decode(raw: bytes) -> Any:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequestError("request body is not valid UTF-8", {"position": exc.start}) from None
    if max_nesting(raw, MAX_BODY_DEPTH) > MAX_BODY_DEPTH:
        raise BadRequestError(f"JSON nested deeper than {MAX_BODY_DEPTH} levels", {"maxDepth": MAX_BODY_DEPTH})
    try:
        return _DECODER.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        raise BadRequestError("malformed JSON body") from None


# NUL (PostgreSQL text and jsonb refuse it) and lone surrogates (not encodable as UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _unstorable_string(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return _UNSTORABLE.search(value) is not None
    if depth > MAX_BODY_DEPTH:
        return False
    if isinstance(value, list):
        return any(_unstorable_string(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return any(_unstorable_string(k, depth + 1) or _unstorable_string(v, depth + 1) for k, v in value.items())
    return False


def _check_strings(raw: bytes, value: Any) -> None:
    """Such characters can only arrive as `\\u` escapes, so bodies without one skip the walk."""
    if b"\\u" in raw and _unstorable_string(value):
        raise ValidationFailedError("strings may not contain NUL (\\u0000) or unpaired surrogates", {"field": "body"})


def _check_types(value: Any, data_type: Any) -> None:
    """Strict conversion (no string-to-number coercion); the value itself is left for Litestar to convert."""
    try:
        msgspec.convert(value, data_type, strict=True, str_keys=True)
    except msgspec.ValidationError as exc:
        message = str(exc)
        field = field_from_message(message) or "body"
        raise ValidationFailedError(
            "request validation failed",
            {"field": field, "errors": [{"field": field, "message": message}]},
        ) from None
    except TypeError:  # a type msgspec cannot check (not ours today): Litestar's own validation decides
        return


def guard_json_body(max_size: int) -> Any:
    """Route middleware factory: a POST/PUT/PATCH body must be JSON (415), fit `max_size` (413), be UTF-8,
    nest at most `MAX_BODY_DEPTH` levels, decode (400), and match the handler's `data` type strictly (422).
    It runs after routing, so unknown routes and wrong methods keep their 404/405."""

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP or scope.get("method") not in _BODY_METHODS:
                await app(scope, receive, send)
                return
            length = _header(scope, b"content-length")
            has_body = (length is not None and length.strip() not in ("", "0")) or (
                _header(scope, b"transfer-encoding") is not None
            )
            if not has_body:
                await app(scope, receive, send)
                return
            content_type = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
            if not (content_type == "application/json" or content_type.endswith("+json")):
                raise ApiError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "unsupported media type, send application/json")
            if length is not None and length.strip().isdigit() and int(length) > max_size:
                raise PayloadTooLargeError("request body too large", {"maxBytes": max_size})
            raw, messages = await _read_body(receive, max_size)
            if raw:
                value = _decode(raw)
                _check_strings(raw, value)
                data_type = _data_type(scope)
                if data_type is not None:
                    _check_types(value, data_type)
                state = ScopeState.from_scope(scope)
                state.body = raw
                state.json = value
            replay = iter(messages)

            async def replay_receive() -> ReceiveMessage:
                message = next(replay, None)
                return message if message is not None else await receive()

            await app(scope, replay_receive, send)

        return middleware

    return factory
