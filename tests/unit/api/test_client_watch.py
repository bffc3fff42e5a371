"""How `taskyard tasks watch` prints events: stream pieces by byte offset, progress bars, statuses."""

from __future__ import annotations

import io
import json

from taskyard.client.watch import _Printer


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _printer(*, tty: bool = False, as_json: bool = False) -> tuple[_Printer, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), (_Tty() if tty else io.StringIO())
    return _Printer(out, err, as_json), out, err


def _piece(attempt: int, offset: int, delta: str) -> dict[str, object]:
    return {"type": "task/stream", "attempt": attempt, "offset": offset, "delta": delta}


def test_stream_pieces_print_once_even_when_resent_or_overlapping() -> None:
    printer, out, err = _printer()
    printer.event(_piece(1, 0, "héllo "))
    printer.event(_piece(1, 0, "héllo "))  # a resend after a reconnect
    printer.event(_piece(1, 4, "lo wor"))  # overlaps: only "wor" is new ("é" is two bytes)
    printer.event(_piece(1, 10, "ld"))
    assert out.getvalue() == "héllo world"
    assert err.getvalue().count("--- output of attempt 1 ---") == 1


def test_a_new_attempt_starts_a_new_text() -> None:
    printer, out, err = _printer()
    printer.event(_piece(1, 0, "first"))
    printer.event(_piece(2, 0, "second"))
    assert out.getvalue() == "first\nsecond"
    assert "--- output of attempt 2 ---" in err.getvalue()


def test_progress_is_a_bar_on_a_terminal_and_a_line_otherwise() -> None:
    printer, _, err = _printer(tty=True)
    printer.event({"type": "task/progress", "attempt": 1, "data": {"elapsedS": 1, "totalS": 4}})
    printer.event({"type": "task/progress", "attempt": 1, "data": {"done": 3, "total": 4}, "message": "almost"})
    printer.event({"type": "task/status", "attempt": 1, "status": "done"})
    text = err.getvalue()
    assert "\r[########......................]  25.0% " in text
    assert "75.0% almost" in text
    assert text.endswith("\n[done] attempt 1\n")

    printer, _, err = _printer()
    printer.event({"type": "task/progress", "attempt": 1, "data": {"done": 1, "total": 2}})
    printer.event({"type": "task/progress", "attempt": 1, "message": "thinking"})
    assert err.getvalue() == "progress: 50.0% \nprogress: thinking\n"


def test_status_lines_name_the_agent_and_reason() -> None:
    printer, _, err = _printer()
    printer.event({"type": "task/status", "attempt": 2, "status": "queued", "agentId": "a-1", "reason": "agent lost"})
    assert err.getvalue() == "[queued] attempt 2 on a-1 (agent lost)\n"


def test_json_mode_prints_one_object_per_line() -> None:
    printer, out, err = _printer(as_json=True)
    printer.event(_piece(1, 0, "x"))
    printer.finish({"id": "t", "status": "done", "result": {"a": 1}})
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines == [_piece(1, 0, "x"), {"type": "task", "task": {"id": "t", "status": "done", "result": {"a": 1}}}]
    assert err.getvalue() == ""
