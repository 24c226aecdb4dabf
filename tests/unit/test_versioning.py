import pytest
from kitaru.core.versioning import next_version, parse_high_water_mark


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
