"""The dev supervisor's restart policy: backoff that doubles while a child dies young, and when it gives up."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from taskyard import dev_children
from taskyard.dev_children import GIVE_UP_AFTER, Child, Stack, restart_delay_s, supervise


def test_restart_delay_doubles_and_is_capped() -> None:
    assert [restart_delay_s(n) for n in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def _exited_child(code: int = 3) -> Child:
    argv = [sys.executable, "-c", f"raise SystemExit({code})"]
    process = subprocess.Popen(argv)
    process.wait(timeout=30)
    return Child("worker-1", argv, {}, process)


def test_a_child_that_keeps_dying_young_stops_the_stack(capsys: pytest.CaptureFixture[str]) -> None:
    """Every restart (run through `supervise` with a clock that jumps to each restart time) dies at once."""
    child = _exited_child()
    prepared: list[int] = []
    child.prepare = lambda c: prepared.append(c.young_deaths)
    times = iter(float(t) for t in range(0, 10_000, 1))

    def clock() -> float:
        # Jump to the pending restart, else advance 0.1 s: each incarnation dies young.
        return child.restart_at if child.restart_at is not None else next(times) * 0.1

    assert supervise(Stack(children=[child]), threading.Event(), clock=clock) == 1
    err = capsys.readouterr().err
    assert err.count("restarting it in") == GIVE_UP_AFTER - 1
    assert "restarting it in 2 s" in err  # young deaths back off
    assert "giving up and stopping the stack" in err
    assert len(prepared) == GIVE_UP_AFTER - 1  # credentials refreshed before every restart


def test_a_child_that_ran_a_while_restarts_after_one_second(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    child = _exited_child(0)
    child.started_at = -1000.0
    stop = threading.Event()
    calls = iter([0.0, 0.5, 1.0])

    def clock() -> float:
        value = next(calls, None)
        if value is None:
            stop.set()
            return 2.0
        return value

    monkeypatch.setattr(dev_children, "POLL_S", 0.0)
    assert supervise(Stack(children=[child]), stop, clock=clock) == 0
    err = capsys.readouterr().err
    assert "exited with code 0; restarting it in 1 s" in err
    assert "restarted worker-1" in err
    child.process.wait(timeout=30)
