"""Pure pieces of the HTTP edge: the nesting scan, the X-Forwarded-For rule, the log filters."""

from __future__ import annotations

import logging

import pytest

from api.http.body import MAX_BODY_DEPTH, max_nesting
from api.http.context import forwarded_client
from api.http.logs import DropUvicornHandshakes, RedactCredentials, _SecondCachedFormatter
from api.http.middleware import _printable


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"[" * 100 + b"]" * 100, 100),
        (b"[" * 100, 100),  # unbalanced counts too: the decoder never sees it
        (b'{"a": "' + b"[" * 500 + b'"}', 0),  # brackets inside a string are not nesting
        (b'{"a": "\\"' + b"[" * 500 + b'"}', 0),  # nor after an escaped quote
        (b"[[1], [2], [[3]]]", 0),  # few brackets: no scan at all
    ],
)
def test_max_nesting(raw: bytes, depth: int) -> None:
    found = max_nesting(raw, MAX_BODY_DEPTH)
    if depth > MAX_BODY_DEPTH:
        assert found > MAX_BODY_DEPTH
    else:
        assert found <= MAX_BODY_DEPTH


def test_max_nesting_counts_exactly_near_the_limit() -> None:
    body = b"[" * MAX_BODY_DEPTH + b"]" * MAX_BODY_DEPTH
    assert max_nesting(body, MAX_BODY_DEPTH) <= MAX_BODY_DEPTH
    # Past the cheap bound, the scan measures: two siblings of the limit's depth stay within it.
    assert max_nesting(b"[" + body + b"," + body + b"]", MAX_BODY_DEPTH + 1) == MAX_BODY_DEPTH + 1
    deeper = b"[" + body + b"]"
    assert max_nesting(deeper, MAX_BODY_DEPTH) == MAX_BODY_DEPTH + 1


def test_forwarded_for_only_from_trusted_proxies() -> None:
    # No proxies configured: the header is ignored.
    assert forwarded_client("203.0.113.9", "1.2.3.4", ()) == "203.0.113.9"
    # An untrusted peer cannot pick its address.
    assert forwarded_client("203.0.113.9", "1.2.3.4", ("10.0.0.0/8",)) == "203.0.113.9"
    # Through a trusted proxy: the nearest untrusted hop, not a forged one further left.
    assert forwarded_client("10.0.0.5", "6.6.6.6, 198.51.100.7", ("10.0.0.0/8",)) == "198.51.100.7"
    assert forwarded_client("10.0.0.5", "198.51.100.7, 10.0.0.9", ("10.0.0.0/8",)) == "198.51.100.7"
    assert forwarded_client("10.0.0.5", "", ("10.0.0.0/8",)) == "10.0.0.5"


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, msg, args, None)


def test_log_filters_drop_handshakes_and_mask_credentials() -> None:
    assert not DropUvicornHandshakes().filter(_record('%s - "WebSocket %s" [accepted]', "1.2.3.4", "/ws?token=x"))
    assert DropUvicornHandshakes().filter(_record("Started server process [%d]", 1))
    record = _record("GET %s auth=%s", "/ws?role=agent&agent_token=s3cret&x=1", "Bearer abc.def.ghi")
    assert RedactCredentials().filter(record)
    message = record.getMessage()
    assert "s3cret" not in message
    assert "abc.def.ghi" not in message
    assert "agent_token=[REDACTED]&x=1" in message


def test_redaction_is_case_blind_and_leaves_clean_records_alone() -> None:
    record = _record("POST %s %s", "/x?Access_TOKEN=abc123", "BEARER zzz.yyy")
    assert RedactCredentials().filter(record)
    assert "abc123" not in record.getMessage()
    assert "zzz.yyy" not in record.getMessage()
    clean = _record("request_id=%s path=%s status=%s", "r1", "/api/tasks", 201)
    assert RedactCredentials().filter(clean)
    assert clean.args == ("r1", "/api/tasks", 201)  # untouched: no secret marker in it


def test_cached_asctime_matches_the_standard_formatter() -> None:
    fmt = "%(asctime)s %(levelname)s %(name)s %(message)s"
    cached = _SecondCachedFormatter(fmt)
    standard = logging.Formatter(fmt)
    for created in (1_700_000_000.001, 1_700_000_000.999, 1_700_000_001.5, 1_700_000_000.25):
        record = _record("line %d", 1)
        record.created = created
        record.msecs = (created - int(created)) * 1000
        assert cached.format(record) == standard.format(record)


def test_access_log_paths_escape_control_characters() -> None:
    assert _printable("/api/tasks") == "/api/tasks"
    assert _printable("/a\nINFO forged") == "/a\\nINFO forged"
    assert len(_printable("/" + "a" * 600)) == 512
