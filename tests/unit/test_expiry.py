"""Expiring tags: `--expires` durations and the expiry time they make (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from kitaru.core.expiry import (
    InvalidExpiry,
    expiry_time,
    format_expiry,
    parse_duration,
    parse_expiry,
)

NOW = datetime(2026, 6, 1, 12, 0, 0, 500000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600), (" 1d ", 86400)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "7", "d", "0d", "-1d", "1.5h", "7 days", "7D", "1y", "soon"])
def test_not_a_duration(text: str) -> None:
    with pytest.raises(InvalidExpiry, match="is not a duration"):
        parse_duration(text)


def test_more_than_a_year_is_refused() -> None:
    assert parse_duration("366d") == timedelta(days=366)
    with pytest.raises(InvalidExpiry, match="more than a year"):
        parse_duration("367d")


def test_expiry_time_is_whole_seconds_utc() -> None:
    assert format_expiry(expiry_time("canary", "7d", NOW)) == "2026-06-08T12:00:00Z"


def test_default_never_expires() -> None:
    with pytest.raises(InvalidExpiry, match="the 'default' tag cannot expire"):
        expiry_time("default", "7d", NOW)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-06-08T12:00:00Z", datetime(2026, 6, 8, 12, tzinfo=UTC)),
        ("2026-06-08T14:00:00+02:00", datetime(2026, 6, 8, 12, tzinfo=UTC)),
        ("2026-06-08T12:00:00", datetime(2026, 6, 8, 12, tzinfo=UTC)),
        (None, None),
        ("", None),
        ("next week", None),
    ],
)
def test_parse_expiry(value: str | None, expected: datetime | None) -> None:
    assert parse_expiry(value) == expected
