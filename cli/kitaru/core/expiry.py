"""Expiring tags: when a route's tag comes off by itself.

Pure. The client turns `--expires 7d` into the route's `spec.expiresAt` (RFC 3339,
whole seconds, UTC); kubectl users write the timestamp directly. The operator deletes
the route when that time has come (compare-and-swap, so a route re-tagged meanwhile
stays) and records the delete in the route history with reason `expired`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from kitaru.core.names import DEFAULT_TAG
from kitaru.core.tagging import TagError

EXPIRED_REASON = "expired"
# Who the history names for an expiry: the operator deleted the route.
EXPIRED_BY = "kitaru-operator"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^([0-9]{1,9})([smhdw])$")
# A year is far enough for a temporary tag; longer is a permanent tag.
MAX_EXPIRY = timedelta(days=366)


class InvalidExpiry(TagError):
    """An --expires value that is not a duration, or one on `default`."""

    reason = "InvalidExpiry"


def duration_seconds(text: str) -> int | None:
    """`30m`, `12h`, `7d`, `2w`, `90s` as seconds (a positive whole number and one unit);
    None for anything else."""
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        return None
    return int(match.group(1)) * _UNITS[match.group(2)]


def parse_duration(text: str) -> timedelta:
    """`30m`, `12h`, `7d`, `2w`, `90s`: a positive whole number and one unit."""
    seconds = duration_seconds(text)
    if seconds is None:
        raise InvalidExpiry(
            f"expiry {text[:40]!r} is not a duration: use a positive whole number and a "
            "unit (s, m, h, d or w), e.g. 30m, 12h or 7d"
        )
    span = timedelta(seconds=seconds)
    if span > MAX_EXPIRY:
        raise InvalidExpiry(
            f"expiry {text.strip()} is more than a year: leave the expiry out for a tag "
            "that does not expire"
        )
    return span


def expiry_time(tag: str, expires: str, now: datetime) -> datetime:
    """The `spec.expiresAt` of `kitaru flow tag … --expires DURATION` run at `now`."""
    if tag == DEFAULT_TAG:
        raise InvalidExpiry(
            f"the '{DEFAULT_TAG}' tag cannot expire: every flow always has one; "
            "expire another tag, or move default with kitaru flow tag FLOW default --version N"
        )
    return (now + parse_duration(expires)).astimezone(UTC).replace(microsecond=0)


def format_expiry(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_expiry(value: str | None) -> datetime | None:
    """A route's `spec.expiresAt` as a time (None: none, or not a time)."""
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)
