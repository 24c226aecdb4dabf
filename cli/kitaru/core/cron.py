"""Cron expressions and their ticks in a time zone: pure, no clock of its own.

Five fields (minute hour day-of-month month day-of-week) as in Vixie cron and
Kubernetes CronJobs: `*`, lists `a,b`, ranges `a-b`, steps `*/n`, `a-b/n` and `a/n`,
month and weekday names (`jan`, `mon`), weekday 7 = Sunday, and the macros `@yearly`
(`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`) and `@hourly`. When both
day fields are restricted a day matches either (cron's rule); otherwise both.

A small parser of our own rather than a dependency: the grammar is tiny, and the
time-zone rules below are ours to state and test (the maintained PyPI parsers differ
on them, and croniter, the common one, announced its end of maintenance).

Ticks are wall-clock times in the schedule's time zone:
- a time that does not exist (clocks go forward over it) fires once, at the first
  instant after the gap: a daily `30 2 * * *` in Europe/Berlin fires at 03:00 on the
  spring-forward day, and `*/15` fires once for the missing hour;
- a time that happens twice (clocks go back) fires once, the first time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (name, lowest, highest, names for the values from `lowest` on)
_FIELDS = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _WEEKDAYS),
)
EXAMPLE = "'0 3 * * *' (03:00 every day) or @hourly"
# A leap day on a given weekday recurs within 28 years; searching further finds nothing.
_SEARCH_DAYS = 366 * 29
_MINUTE = timedelta(minutes=1)
_UTC = ZoneInfo("UTC")


class InvalidSchedule(ValueError):
    """A cron expression or time zone that cannot be used; `reason` is CamelCase."""

    def __init__(self, message: str, reason: str = "InvalidSchedule") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression: the matching values of each field."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        by_day = day.day in self.days
        by_weekday = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return by_day or by_weekday
        return by_day and by_weekday


def _value(text: str, field: str, low: int, high: int, names: list[str] | None) -> int:
    if names and text.lower() in names:
        return low + names.index(text.lower())
    if not text.isdigit():
        named = f" or a name like {names[0]}" if names else ""
        raise InvalidSchedule(f"{field} {text!r} is not a number{named}")
    number = int(text)
    if not low <= number <= high:
        raise InvalidSchedule(f"{field} {number} is out of range {low}-{high}")
    return number


def _field(text: str, field: str, low: int, high: int, names: list[str] | None) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise InvalidSchedule(f"{field} step {step_text!r} must be a whole number >= 1")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start = _value(first, field, low, high, names)
            end = _value(last, field, low, high, names)
            if start > end:
                raise InvalidSchedule(f"{field} range {base!r} goes backwards")
        elif base:
            start = _value(base, field, low, high, names)
            end = high if slash else start
        else:
            raise InvalidSchedule(f"{field} has an empty item in {text!r}")
        values.update(range(start, end + 1, step))
    return values


def parse_cron(expression: str) -> Cron:
    """The parsed expression; InvalidSchedule naming the field to fix."""
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidSchedule(f"the schedule is empty: use a cron expression like {EXAMPLE}")
    text = expression.strip()
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise InvalidSchedule(
                f"unknown schedule macro {text!r}: use one of {', '.join(MACROS)} "
                "or five cron fields"
            )
        text = MACROS[text.lower()]
    parts = text.split()
    if len(parts) != 5:
        raise InvalidSchedule(
            f"invalid schedule {expression!r}: a cron expression has 5 fields (minute hour "
            f"day-of-month month day-of-week), not {len(parts)}; e.g. {EXAMPLE}"
        )
    try:
        fields = [_field(p, *spec) for p, spec in zip(parts, _FIELDS, strict=True)]
    except InvalidSchedule as exc:
        raise InvalidSchedule(f"invalid schedule {expression!r}: {exc.message}") from None
    minutes, hours, days, months, weekdays = fields
    weekdays = {d % 7 for d in weekdays}
    cron = Cron(
        expression=expression,
        minutes=frozenset(minutes),
        hours=frozenset(hours),
        days=frozenset(days),
        months=frozenset(months),
        weekdays=frozenset(weekdays),
        days_restricted=not parts[2].startswith("*"),
        weekdays_restricted=not parts[4].startswith("*"),
    )
    if _search_day(cron, date(2000, 1, 1), 1) is None:
        raise InvalidSchedule(f"invalid schedule {expression!r}: it never fires (no such date)")
    return cron


def time_zone(name: str | None) -> ZoneInfo:
    """The IANA time zone (None or '' = UTC); InvalidSchedule(UnknownTimeZone) otherwise."""
    if not name:
        return _UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(
            f"unknown time zone {name!r}: use an IANA name like Europe/Berlin, "
            "America/New_York or UTC",
            reason="UnknownTimeZone",
        ) from None


def _search_day(cron: Cron, day: date, step: int) -> date | None:
    for _ in range(_SEARCH_DAYS):
        if cron.matches_day(day):
            return day
        day += timedelta(days=step)
    return None


def _wall_matches(cron: Cron, wall: datetime) -> bool:
    return wall.minute in cron.minutes and wall.hour in cron.hours and cron.matches_day(wall.date())


def _next_wall(cron: Cron, wall: datetime) -> datetime | None:
    """The first naive wall-clock minute >= `wall` that matches."""
    day = _search_day(cron, wall.date(), 1)
    if day is None:
        return None
    if day != wall.date():
        wall = datetime.combine(day, datetime.min.time())
    while True:
        for hour in sorted(h for h in cron.hours if h >= wall.hour):
            start = wall.minute if hour == wall.hour else 0
            minute = min((m for m in cron.minutes if m >= start), default=None)
            if minute is not None:
                return wall.replace(hour=hour, minute=minute)
        following = _search_day(cron, wall.date() + timedelta(days=1), 1)
        if following is None:
            return None
        wall = datetime.combine(following, datetime.min.time())


def _previous_wall(cron: Cron, wall: datetime) -> datetime | None:
    """The last naive wall-clock minute <= `wall` that matches."""
    day = _search_day(cron, wall.date(), -1)
    if day is None:
        return None
    if day != wall.date():
        wall = datetime.combine(day, datetime.max.time()).replace(second=0, microsecond=0)
    while True:
        for hour in sorted((h for h in cron.hours if h <= wall.hour), reverse=True):
            end = wall.minute if hour == wall.hour else 59
            minute = max((m for m in cron.minutes if m <= end), default=None)
            if minute is not None:
                return wall.replace(hour=hour, minute=minute)
        earlier = _search_day(cron, wall.date() - timedelta(days=1), -1)
        if earlier is None:
            return None
        wall = datetime.combine(earlier, datetime.max.time()).replace(second=0, microsecond=0)


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """When a wall-clock minute happens (UTC): its first occurrence, or — if clocks
    skip it — the first instant after the gap."""
    local = wall.replace(tzinfo=zone)
    utc = local.astimezone(UTC)
    if utc.astimezone(zone).replace(tzinfo=None) == wall:
        return utc
    after = wall  # in a gap: walk to the first existing minute (gaps are hours at most)
    while True:
        after += _MINUTE
        moved = after.replace(tzinfo=zone).astimezone(UTC)
        if moved.astimezone(zone).replace(tzinfo=None) == after:
            return moved


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0, fold=0)


def next_tick(cron: Cron, zone: ZoneInfo, after: datetime) -> datetime | None:
    """The first tick strictly after `after` (an aware datetime), in UTC."""
    wall = _wall(after, zone) + _MINUTE
    while (found := _next_wall(cron, wall)) is not None:
        instant = _instant(found, zone)
        if instant > after:
            return instant
        wall = found + _MINUTE  # a repeated or skipped wall time that already passed
    return None


def previous_tick(cron: Cron, zone: ZoneInfo, at: datetime) -> datetime | None:
    """The last tick at or before `at` (an aware datetime), in UTC."""
    wall = _wall(at, zone)
    while (found := _previous_wall(cron, wall)) is not None:
        instant = _instant(found, zone)
        if instant <= at:
            break
        wall = found - _MINUTE
    else:
        return None
    # After clocks went back, earlier wall times can be later instants: step forward.
    while (later := next_tick(cron, zone, instant)) is not None and later <= at:
        instant = later
    return instant
