"""Per-flow version allocation: numbers grow and are never reused."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kitaru.core.names import ANNOTATION_HIGHEST_VERSION


def next_version(existing: Iterable[int], high_water_mark: int = 0) -> int:
    """The next version of a flow: one above every version that exists or ever existed.

    `high_water_mark` is the highest version ever seen (`route_high_water_mark` of the
    flow's default route), so deleting the highest version does not free its number.
    """
    return max([high_water_mark, *existing], default=0) + 1


def parse_high_water_mark(annotation: str | None) -> int:
    """The high-water mark stored in an annotation value; 0 when absent or malformed."""
    if annotation is None or not annotation.isdigit():
        return 0
    return int(annotation)


def route_high_water_mark(route: Mapping[str, Any] | None) -> int:
    """The high-water mark of a flow's default FlowRoute (0 without one): the higher of
    what the operator recorded in its status (`highestVersion`, which admission trusts:
    only the operator writes status) and the client's annotation (written right after a
    deploy, before the operator gets to it)."""
    if route is None:
        return 0
    annotations = (route.get("metadata") or {}).get("annotations") or {}
    recorded = (route.get("status") or {}).get("highestVersion")
    return max(
        parse_high_water_mark(annotations.get(ANNOTATION_HIGHEST_VERSION)),
        recorded if isinstance(recorded, int) else 0,
    )


def raised_high_water_mark(mark: int, versions: Iterable[int]) -> int | None:
    """The mark to record after seeing `versions`: their highest when it is above `mark`,
    else None (the mark already covers them: nothing to write). Client and operator
    both decide with this before their compare-and-swap (`high_water_mark_patch`)."""
    highest = max(versions, default=0)
    return highest if highest > mark else None


def high_water_mark_patch(resource_version: str, mark: int) -> dict[str, Any]:
    """The merge patch that raises the mark on a flow's `default` route, guarded by the
    resourceVersion the decision was made on: a 409 means decide again on the newer route."""
    return {
        "metadata": {
            "resourceVersion": resource_version,
            "annotations": {ANNOTATION_HIGHEST_VERSION: str(mark)},
        }
    }
