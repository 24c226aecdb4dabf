import pytest
from kitaru.core.names import ANNOTATION_HIGHEST_VERSION
from kitaru.core.versioning import (
    high_water_mark_patch,
    next_version,
    parse_high_water_mark,
    raised_high_water_mark,
    route_high_water_mark,
)


@pytest.mark.parametrize(
    ("existing", "hwm", "expected"),
    [
        ([], 0, 1),
        ([1], 0, 2),
        ([1, 2, 3], 0, 4),
        ([3, 1, 2], 0, 4),
        ([1, 5], 0, 6),  # gaps are not filled
        ([1, 2], 3, 4),  # the highest was deleted: never reused
        ([], 7, 8),  # every version deleted
        ([9], 3, 10),  # a stale mark never lowers the next number
        (iter([2, 4]), 0, 5),  # any iterable
    ],
)
def test_next_version(existing, hwm: int, expected: int) -> None:
    assert next_version(existing, hwm) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, 0), ("", 0), ("12", 12), ("0", 0), ("-3", 0), ("x", 0), ("1.5", 0)],
)
def test_parse_high_water_mark(value: str | None, expected: int) -> None:
    assert parse_high_water_mark(value) == expected


def _route(annotations: dict[str, str] | None = None) -> dict:
    metadata: dict = {"name": "f.default", "resourceVersion": "7"}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": {"versions": [1]}, "status": {"mode": "exclusive"}}


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        (None, 0),
        ({}, 0),
        ({ANNOTATION_HIGHEST_VERSION: "4"}, 4),
        ({ANNOTATION_HIGHEST_VERSION: "x"}, 0),
    ],
)
def test_route_high_water_mark(annotations: dict[str, str] | None, expected: int) -> None:
    assert route_high_water_mark(_route(annotations)) == expected
    assert route_high_water_mark(None) == 0


@pytest.mark.parametrize(
    ("mark", "versions", "expected"),
    [
        (0, [1], 1),
        (3, [5], 5),
        (3, [4, 2, 6], 6),
        (3, [3], None),  # already there: nothing to write
        (3, [2], None),  # never lowered
        (3, [], None),
        (0, iter([2]), 2),  # any iterable
    ],
)
def test_raised_high_water_mark(mark: int, versions, expected: int | None) -> None:
    assert raised_high_water_mark(mark, versions) == expected


def test_high_water_mark_patch_is_guarded_by_the_resource_version() -> None:
    assert high_water_mark_patch("7", 5) == {
        "metadata": {"resourceVersion": "7", "annotations": {ANNOTATION_HIGHEST_VERSION: "5"}}
    }
