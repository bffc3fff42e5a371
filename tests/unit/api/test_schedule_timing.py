"""Cron and interval firing times, daylight-saving rules included (pure functions, fixed instants)."""

from __future__ import annotations

import datetime as dt

import pytest

from api.schedules.timing import check_cron, check_timezone, next_after, next_times

UTC = dt.UTC
ANCHOR = dt.datetime(2026, 1, 1, tzinfo=UTC)


def cron_times(expr: str, zone: str, after: dt.datetime, n: int) -> list[str]:
    times = next_times(after, n, cron=expr, timezone=zone, interval_s=None, anchor=ANCHOR)
    return [t.strftime("%Y-%m-%dT%H:%MZ") for t in times]


def test_daily_cron_in_a_zone_follows_the_wall_clock_across_dst() -> None:
    # 09:00 Paris is 08:00Z in winter and 07:00Z in summer (change on 2026-03-29).
    assert cron_times("0 9 * * *", "Europe/Paris", dt.datetime(2026, 3, 28, 0, tzinfo=UTC), 3) == [
        "2026-03-28T08:00Z",
        "2026-03-29T07:00Z",
        "2026-03-30T07:00Z",
    ]


def test_repeated_hour_fires_once() -> None:
    # New York falls back on 2026-11-01: 01:30 happens at 05:30Z (EDT) and again at 06:30Z (EST).
    assert cron_times("30 1 * * *", "America/New_York", dt.datetime(2026, 10, 31, 12, tzinfo=UTC), 2) == [
        "2026-11-01T05:30Z",
        "2026-11-02T06:30Z",
    ]


def test_repeated_hour_with_a_frequent_cron_never_goes_back() -> None:
    times = next_times(
        dt.datetime(2026, 11, 1, 4, 50, tzinfo=UTC),
        8,
        cron="*/20 * * * *",
        timezone="America/New_York",
        interval_s=None,
        anchor=ANCHOR,
    )
    assert times == sorted(set(times))
    # The second pass of 01:00-01:59 (06:00Z-06:59Z) fires nothing: those wall times already fired.
    assert not [t for t in times if t.hour == 6]
    assert [t.strftime("%H:%M") for t in times[:4]] == ["05:00", "05:20", "05:40", "07:00"]


def test_skipped_hour_fires_an_hour_later_on_the_new_wall_clock() -> None:
    # 2026-03-08 02:30 does not exist in New York; it fires at 03:30 EDT = 07:30Z.
    assert cron_times("30 2 * * *", "America/New_York", dt.datetime(2026, 3, 7, 12, tzinfo=UTC), 2) == [
        "2026-03-08T07:30Z",
        "2026-03-09T06:30Z",
    ]


def test_skipped_hour_does_not_double_fire_a_colliding_occurrence() -> None:
    # 02:30 (nonexistent -> 03:30 EDT) and 03:30 are the same instant: one firing.
    times = cron_times("30 2,3 * * *", "America/New_York", dt.datetime(2026, 3, 8, 5, tzinfo=UTC), 3)
    assert times == ["2026-03-08T07:30Z", "2026-03-09T06:30Z", "2026-03-09T07:30Z"]


def test_interval_counts_from_the_anchor() -> None:
    anchor = dt.datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
    after = anchor + dt.timedelta(seconds=150)
    assert next_after(after, cron=None, timezone="UTC", interval_s=60, anchor=anchor) == anchor + dt.timedelta(
        seconds=180
    )
    assert next_after(anchor - dt.timedelta(days=1), cron=None, timezone="UTC", interval_s=60, anchor=anchor) == anchor
    exact = anchor + dt.timedelta(seconds=120)
    assert next_after(exact, cron=None, timezone="UTC", interval_s=60, anchor=anchor) == anchor + dt.timedelta(
        seconds=180
    )


def test_a_cron_that_never_matches_has_no_next_time() -> None:
    assert next_after(ANCHOR, cron="0 0 30 2 *", timezone="UTC", interval_s=None, anchor=ANCHOR) is None


@pytest.mark.parametrize(
    ("expr", "ok"),
    [
        ("*/5 * * * *", True),
        ("0 9 * * 1-5", True),
        ("* * * * * *", False),
        ("nope", False),
        ("61 * * * *", False),
        ("0 0 30 2 *", False),
    ],
)
def test_check_cron(expr: str, ok: bool) -> None:
    assert (check_cron(expr) is None) is ok


def test_check_timezone() -> None:
    assert check_timezone("Europe/Paris") is None
    assert check_timezone("UTC") is None
    assert check_timezone("Mars/Olympus") is not None
    assert check_timezone("../../etc/passwd") is not None
