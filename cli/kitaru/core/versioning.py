"""Per-flow version allocation: numbers grow and are never reused."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kitaru.core.names import ANNOTATION_HIGHEST_VERSION


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


def route_high_water_mark(route: Mapping[str, Any] | None) -> int:
    """The high-water mark recorded on a flow's default FlowRoute (0 without one)."""
    if route is None:
        return 0
    annotations = (route.get("metadata") or {}).get("annotations") or {}
    return parse_high_water_mark(annotations.get(ANNOTATION_HIGHEST_VERSION))


def with_high_water_mark(route: Mapping[str, Any], version: int) -> dict[str, Any] | None:
    """The default route with its mark raised to `version` (for a compare-and-swap
    replace: resourceVersion kept, status dropped), or None when it is already there."""
    if route_high_water_mark(route) >= version:
        return None
    metadata = dict(route["metadata"])
    metadata["annotations"] = {
        **(metadata.get("annotations") or {}),
        ANNOTATION_HIGHEST_VERSION: str(version),
    }
    return {key: value for key, value in route.items() if key != "status"} | {"metadata": metadata}
