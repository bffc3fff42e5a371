"""The streaming agent's beat: every task on the shared beat by default, or each at its own phase of one interval."""

from __future__ import annotations

import random

from bench.ty.streamer import stream_phase


def test_tasks_share_the_beat_unless_staggered() -> None:
    rng = random.Random(1)
    assert stream_phase({"events": 10, "rate": 20.0}, rng) == 0.0
    assert stream_phase({"events": 10, "rate": 20.0, "stagger": False}, rng) == 0.0
    assert stream_phase({"events": 10, "rate": 0.0, "stagger": True}, rng) == 0.0


def test_staggered_phases_spread_over_one_interval() -> None:
    rng = random.Random(7)
    phases = [stream_phase({"events": 10, "rate": 20.0, "stagger": True}, rng) for _ in range(500)]
    assert all(0.0 <= p < 0.05 for p in phases)
    # Spread over the whole interval, not bunched: every fifth of it holds some tasks' beats.
    assert {int(p / 0.01) for p in phases} == {0, 1, 2, 3, 4}
