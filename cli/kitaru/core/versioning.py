"""Per-flow version allocation: numbers grow and are never reused."""

from __future__ import annotations

from collections.abc import Iterable


def next_version(existing: Iterable[int], high_water_mark: int = 0) -> int:
    """The next version of a flow: one above every version that exists or ever existed.

    `high_water_mark` is the highest version ever seen (annotation
    `kitaru.dev/highest-version` on the flow's default route), so deleting the
    highest version does not free its number.
    """
    return max([high_water_mark, *existing], default=0) + 1


def parse_high_water_mark(annotation: str | None) -> int:
    """The high-water mark stored in an annotation value; 0 when absent or malformed."""
    if annotation is None or not annotation.isdigit():
        return 0
    return int(annotation)
