from __future__ import annotations

import pytest

from protocol.status import (
    ACTIVE_STATUSES,
    ALLOWED_TRANSITIONS,
    TERMINAL_STATUSES,
    TaskStatus,
    can_transition,
    is_terminal,
)


def test_statuses_and_their_wire_values() -> None:
    assert [s.value for s in TaskStatus] == [
        "scheduled",
        "queued",
        "assigned",
        "running",
        "done",
        "failed",
        "canceled",
    ]


def test_active_and_terminal_partition_the_statuses() -> None:
    assert set(TaskStatus) == ACTIVE_STATUSES | TERMINAL_STATUSES
    assert not ACTIVE_STATUSES & TERMINAL_STATUSES
    assert {"done", "failed", "canceled"} == TERMINAL_STATUSES


def test_terminal_statuses_are_never_left() -> None:
    for status in TERMINAL_STATUSES:
        assert ALLOWED_TRANSITIONS[status] == frozenset()


def test_every_active_status_can_be_canceled_and_has_a_way_forward() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(TaskStatus)
    for status in ACTIVE_STATUSES:
        assert TaskStatus.CANCELED in ALLOWED_TRANSITIONS[status]
        assert ALLOWED_TRANSITIONS[status] - {TaskStatus.CANCELED}


@pytest.mark.parametrize(
    ("current", "new"),
    [
        ("scheduled", "queued"),
        ("queued", "assigned"),
        ("assigned", "running"),
        ("running", "done"),
        ("running", "failed"),
        ("assigned", "queued"),
        ("running", "queued"),
        ("assigned", "scheduled"),
        ("running", "scheduled"),
    ],
)
def test_documented_transitions_are_allowed(current: str, new: str) -> None:
    assert can_transition(current, new)


@pytest.mark.parametrize(
    ("current", "new"),
    [("done", "queued"), ("failed", "running"), ("canceled", "queued"), ("queued", "running"), ("queued", "done")],
)
def test_other_transitions_are_refused(current: str, new: str) -> None:
    assert not can_transition(current, new)


def test_is_terminal_takes_strings_and_refuses_unknown_ones() -> None:
    assert is_terminal("done")
    assert not is_terminal(TaskStatus.RUNNING)
    with pytest.raises(ValueError):
        is_terminal("exploded")


def test_status_is_a_str() -> None:
    assert TaskStatus.QUEUED == "queued"
    assert f"{TaskStatus.QUEUED}" == "queued"
