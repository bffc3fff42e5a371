from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from protocol.errors import ErrorBody, ErrorCode, InvalidUtf8Error, ProtocolError

ARCHITECTURE = Path(__file__).resolve().parents[3] / "docs" / "architecture.md"
_ROW = re.compile(r"^\| ([a-z_]+) \| (\d{4}) \| (\d{3}) \|$")


def catalogue_rows_in_architecture_doc() -> set[tuple[str, int, int]]:
    lines = ARCHITECTURE.read_text(encoding="utf-8").splitlines()
    start = lines.index("## Error catalogue")
    rows = set()
    for line in lines[start:]:
        if line.startswith("## ") and line != "## Error catalogue":
            break
        if match := _ROW.match(line):
            rows.add((match.group(1), int(match.group(2)), int(match.group(3))))
    return rows


def test_catalogue_matches_the_architecture_table() -> None:
    in_code = {(member.error, member.code, member.http_status) for member in ErrorCode}

    assert in_code == catalogue_rows_in_architecture_doc()


def test_member_names_are_the_upper_case_wire_names() -> None:
    for member in ErrorCode:
        assert member.name == member.error.upper()


def test_codes_and_names_are_unique_and_looked_up_both_ways() -> None:
    assert len({m.code for m in ErrorCode}) == len({m.error for m in ErrorCode}) == len(ErrorCode)
    for member in ErrorCode:
        assert ErrorCode.from_error(member.error) is member
        assert ErrorCode.from_code(member.code) is member
    with pytest.raises(KeyError):
        ErrorCode.from_error("nope")


def test_error_body_is_camel_case_and_omits_none() -> None:
    body = ErrorBody.of(ErrorCode.VALIDATION_ERROR, "bad", request_id="req-1")

    assert msgspec.json.decode(msgspec.json.encode(body)) == {
        "error": "validation_error",
        "message": "bad",
        "code": 1001,
        "requestId": "req-1",
    }


def test_error_body_with_details() -> None:
    body = ProtocolError(ErrorCode.NOT_FOUND, "no such task", {"taskId": "t"}).to_body()

    wire = msgspec.json.decode(msgspec.json.encode(body))

    assert wire == {"error": "not_found", "message": "no such task", "code": 2001, "details": {"taskId": "t"}}


def test_protocol_error_carries_code_message_details() -> None:
    exc = ProtocolError(ErrorCode.STALE_ATTEMPT, "stale", {"attempt": 1})

    assert (exc.code, exc.message, exc.details, str(exc)) == (ErrorCode.STALE_ATTEMPT, "stale", {"attempt": 1}, "stale")
    assert exc.close_code is None


def test_invalid_utf8_is_a_protocol_error_that_closes_with_1007() -> None:
    exc = InvalidUtf8Error()

    assert isinstance(exc, ProtocolError)
    assert exc.close_code == 1007
