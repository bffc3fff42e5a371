from __future__ import annotations

from worker.backoff import Backoff, jittered_delay_s


def test_delay_grows_exponentially_up_to_the_cap() -> None:
    steps = [jittered_delay_s(n, base_s=0.5, max_s=4.0, rand=lambda: 0.999999) for n in range(1, 7)]
    assert [round(s, 3) for s in steps] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_jitter_keeps_at_least_half_the_step() -> None:
    assert jittered_delay_s(3, base_s=1.0, max_s=60.0, rand=lambda: 0.0) == 2.0
    assert jittered_delay_s(3, base_s=1.0, max_s=60.0, rand=lambda: 0.5) == 3.0


def test_huge_failure_counts_do_not_overflow() -> None:
    assert jittered_delay_s(10_000, base_s=1.0, max_s=30.0, rand=lambda: 0.0) == 15.0


def test_backoff_counts_failures_and_resets() -> None:
    backoff = Backoff(base_s=1.0, max_s=10.0, rand=lambda: 0.0)
    assert [backoff.next_delay_s() for _ in range(3)] == [0.5, 1.0, 2.0]
    assert backoff.failures == 3
    backoff.reset()
    assert backoff.next_delay_s() == 0.5
