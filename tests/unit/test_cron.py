"""Cron expressions and their ticks in a time zone (`kitaru.core.cron`)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from kitaru.core.cron import InvalidSchedule, next_tick, parse_cron, previous_tick, time_zone

BERLIN = time_zone("Europe/Berlin")
NEW_YORK = time_zone("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def ticks(expression: str, zone: str | None, after: datetime, count: int) -> list[datetime]:
    cron, tz = parse_cron(expression), time_zone(zone)
    found = []
    for _ in range(count):
        tick = next_tick(cron, tz, after)
        assert tick is not None
        found.append(tick)
        after = tick
    return found


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("* * * * *", utc(2026, 1, 1, 10, 0, 30), utc(2026, 1, 1, 10, 1)),
        ("* * * * *", utc(2026, 1, 1, 10, 1), utc(2026, 1, 1, 10, 2)),  # strictly after
        ("0 3 * * *", utc(2026, 1, 1, 3, 0), utc(2026, 1, 2, 3, 0)),
        ("*/20 9-17 * * mon-fri", utc(2026, 1, 2, 17, 41), utc(2026, 1, 5, 9, 0)),  # Fri->Mon
        ("0 0 1 */3 *", utc(2026, 2, 1), utc(2026, 4, 1)),
        ("0 0 29 2 *", utc(2026, 1, 1), utc(2028, 2, 29)),
        ("0 12 13 * 5", utc(2026, 1, 1), utc(2026, 1, 2, 12)),  # day OR weekday (a Friday)
        ("0 0 * * 7", utc(2026, 1, 1), utc(2026, 1, 4)),  # 7 is Sunday
        ("15 10 * JAN,Jul sun", utc(2026, 1, 1), utc(2026, 1, 4, 10, 15)),
        ("5/20 * * * *", utc(2026, 1, 1, 0, 6), utc(2026, 1, 1, 0, 25)),
        ("@hourly", utc(2026, 1, 1, 0, 6), utc(2026, 1, 1, 1)),
        ("@daily", utc(2026, 1, 1, 0, 6), utc(2026, 1, 2)),
        ("@weekly", utc(2026, 1, 1), utc(2026, 1, 4)),
        ("@monthly", utc(2026, 1, 1), utc(2026, 2, 1)),
        ("@yearly", utc(2026, 1, 1), utc(2027, 1, 1)),
    ],
)
def test_next_tick_in_utc(expression: str, after: datetime, expected: datetime) -> None:
    assert next_tick(parse_cron(expression), time_zone(None), after) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "the schedule is empty"),
        ("* * *", "a cron expression has 5 fields"),
        ("* * * * * *", "not 6"),
        ("61 * * * *", "minute 61 is out of range 0-59"),
        ("* 24 * * *", "hour 24 is out of range 0-23"),
        ("* * 0 * *", "day of month 0 is out of range 1-31"),
        ("* * * 13 *", "month 13 is out of range 1-12"),
        ("* * * * 8", "day of week 8 is out of range 0-7"),
        ("*/0 * * * *", "minute step '0' must be a whole number >= 1"),
        ("5-1 * * * *", "minute range '5-1' goes backwards"),
        ("x * * * *", "minute 'x' is not a number"),
        ("* * * foo *", "or a name like jan"),
        ("1,,2 * * * *", "empty item"),
        ("@reboot", "unknown schedule macro '@reboot'"),
        ("0 0 30 2 *", "it never fires"),
    ],
)
def test_invalid_expressions_name_the_fix(expression: str, message: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        parse_cron(expression)
    assert message in caught.value.message
    assert caught.value.reason == "InvalidSchedule"


def test_unknown_time_zone() -> None:
    with pytest.raises(InvalidSchedule) as caught:
        time_zone("Mars/Olympus")
    assert caught.value.reason == "UnknownTimeZone"
    assert "use an IANA name like Europe/Berlin" in caught.value.message
    assert time_zone("") == time_zone(None) == time_zone("UTC")


def test_daily_tick_follows_the_wall_clock_across_dst() -> None:
    # 03:00 in Berlin is 02:00 UTC in winter, 01:00 UTC in summer.
    found = ticks("0 3 * * *", "Europe/Berlin", utc(2026, 3, 28, 12), 2)
    assert found == [utc(2026, 3, 29, 1), utc(2026, 3, 30, 1)]
    assert ticks("0 3 * * *", "Europe/Berlin", utc(2026, 1, 1), 1) == [utc(2026, 1, 1, 2)]


def test_a_skipped_wall_time_fires_once_right_after_the_gap() -> None:
    # 2026-03-29: Berlin jumps from 02:00 to 03:00 (01:00 UTC).
    assert ticks("30 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 12), 2) == [
        utc(2026, 3, 29, 1),  # 03:00 CEST, right after the gap
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST the next day
    ]
    # Every quarter hour: the missing hour collapses into one tick at 03:00.
    found = ticks("*/15 * * * *", "Europe/Berlin", utc(2026, 3, 29, 0, 40), 4)
    assert found == [utc(2026, 3, 29, 0, 45), utc(2026, 3, 29, 1), utc(2026, 3, 29, 1, 15),
                     utc(2026, 3, 29, 1, 30)]  # fmt: skip


def test_a_repeated_wall_time_fires_once_the_first_time() -> None:
    # 2026-11-01: New York goes back from 02:00 EDT to 01:00 EST (06:00 UTC).
    assert ticks("30 1 * * *", "America/New_York", utc(2026, 10, 31, 12), 2) == [
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT; not again at 01:30 EST
        utc(2026, 11, 2, 6, 30),
    ]
    found = ticks("*/30 * * * *", "America/New_York", utc(2026, 11, 1, 5, 10), 3)
    assert found == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 7), utc(2026, 11, 1, 7, 30)]


@pytest.mark.parametrize(
    ("expression", "zone", "at", "expected"),
    [
        ("0 3 * * *", None, utc(2026, 1, 2, 3), utc(2026, 1, 2, 3)),  # at the tick
        ("0 3 * * *", None, utc(2026, 1, 2, 2, 59), utc(2026, 1, 1, 3)),
        ("*/15 * * * *", "Europe/Berlin", utc(2026, 3, 29, 1, 20), utc(2026, 3, 29, 1, 15)),
        ("30 2 * * *", "Europe/Berlin", utc(2026, 3, 29, 1, 5), utc(2026, 3, 29, 1)),
        # In the repeated hour, the last tick is the first pass's last one.
        ("*/15 * * * *", "America/New_York", utc(2026, 11, 1, 6, 20), utc(2026, 11, 1, 5, 45)),
        ("0 0 29 2 *", None, utc(2031, 1, 1), utc(2028, 2, 29)),
    ],
)
def test_previous_tick(expression: str, zone: str | None, at: datetime, expected: datetime) -> None:
    assert previous_tick(parse_cron(expression), time_zone(zone), at) == expected


def test_ticks_are_cheap_for_sparse_schedules() -> None:
    # A leap-day schedule is found by skipping whole days, not minutes.
    cron = parse_cron("0 0 29 2 1")  # in February: the 29th OR any Monday
    assert next_tick(cron, NEW_YORK, utc(2026, 1, 1)) == utc(2026, 2, 2, 5)
    assert next_tick(parse_cron("0 0 29 2 *"), BERLIN, utc(2029, 3, 1)) == utc(2032, 2, 28, 23)
