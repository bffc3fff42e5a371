"""When a schedule fires: 5-field cron in an IANA time zone (croniter), or a fixed interval. Pure functions.

Cron is evaluated on the zone's wall clock and each wall time is turned into an instant with
`fold=0`, which gives the two daylight-saving rules:

- Repeated hour (clocks go back): a wall time that happens twice fires once, the first time. An
  occurrence whose instant is not after the previous firing is dropped, so nothing fires twice.
- Skipped hour (clocks go forward): a wall time that does not exist fires at the same offset as before
  the change, i.e. one hour later on the new wall clock (02:30 on the spring-forward night fires at
  03:30); if that instant is also a regular occurrence it fires once.

An interval schedule fires every `interval_s` seconds from its anchor, regardless of time zones.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

__all__ = ("MAX_LOOKAHEAD", "check_cron", "check_timezone", "next_after", "next_times")

MAX_LOOKAHEAD = 10_000
"""Cron candidates examined per call before giving up (an expression that never matches, e.g. Feb 30)."""


def check_cron(expr: str) -> str | None:
    """None when `expr` is a valid 5-field cron expression, else why not."""
    if len(expr.split()) != 5:
        return "cron must have 5 fields: minute hour day-of-month month day-of-week"
    if not croniter.is_valid(expr):
        return "not a valid cron expression"
    if _next_cron(expr, ZoneInfo("UTC"), dt.datetime(2000, 1, 1, tzinfo=dt.UTC)) is None:
        return "this cron expression never fires"
    return None


def check_timezone(name: str) -> str | None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return "unknown time zone (use an IANA name such as Europe/Paris or UTC)"
    return None


def _next_cron(expr: str, zone: ZoneInfo, after: dt.datetime) -> dt.datetime | None:
    local = after.astimezone(zone).replace(tzinfo=None)
    it = croniter(expr, local)
    for _ in range(MAX_LOOKAHEAD):
        try:
            wall: dt.datetime = it.get_next(dt.datetime)
        except CroniterBadDateError:  # a date that never comes (Feb 30)
            return None
        instant = wall.replace(tzinfo=zone, fold=0).astimezone(dt.UTC)
        if instant > after:
            return instant
    return None


def next_after(
    after: dt.datetime,
    *,
    cron: str | None,
    timezone: str,
    interval_s: int | None,
    anchor: dt.datetime,
) -> dt.datetime | None:
    """The first firing strictly after `after` (aware UTC), or None if there is none."""
    if cron is not None:
        return _next_cron(cron, ZoneInfo(timezone), after)
    if interval_s is None or interval_s <= 0:
        return None
    if after < anchor:
        return anchor
    periods = int((after - anchor).total_seconds() // interval_s) + 1
    return anchor + dt.timedelta(seconds=periods * interval_s)


def next_times(
    after: dt.datetime,
    count: int,
    *,
    cron: str | None,
    timezone: str,
    interval_s: int | None,
    anchor: dt.datetime,
) -> list[dt.datetime]:
    """The next `count` firings after `after`."""
    out: list[dt.datetime] = []
    current = after
    for _ in range(count):
        nxt = next_after(current, cron=cron, timezone=timezone, interval_s=interval_s, anchor=anchor)
        if nxt is None:
            break
        out.append(nxt)
        current = nxt
    return out
