from __future__ import annotations

import pytest
from kitaru.core.models import TagRef
from kitaru.core.names import InvalidName, InvalidVersion
from kitaru.core.routing import RouteView
from kitaru.core.tagging import (
    AmbiguousUntag,
    TagError,
    apply_tag,
    bootstrap_default,
    remove_tag,
    tags_for_version,
)


def route(tag: str, *versions: int, exclusive: bool = True, flow: str = "agent") -> RouteView:
    return RouteView(flow, tag, exclusive, frozenset(versions))


@pytest.mark.parametrize(
    ("current", "tag", "version", "exclusive", "expected"),
    [
        # new routes
        (None, "stable", 2, True, route("stable", 2)),
        (None, "bench", 2, False, route("bench", 2, exclusive=False)),
        (None, "default", 1, False, route("default", 1)),  # default is always exclusive
        # exclusive moves
        (route("stable", 1), "stable", 2, True, route("stable", 2)),
        (route("stable", 2), "stable", 2, True, route("stable", 2)),  # idempotent
        (route("default", 1), "default", 3, False, route("default", 3)),
        # shared adds
        (
            route("bench", 1, exclusive=False),
            "bench",
            2,
            False,
            route("bench", 1, 2, exclusive=False),
        ),
        (
            route("bench", 1, 2, exclusive=False),
            "bench",
            2,
            False,
            route("bench", 1, 2, exclusive=False),
        ),
        # the mode follows the latest command
        (route("bench", 1), "bench", 2, False, route("bench", 1, 2, exclusive=False)),
        (route("bench", 1, 2, exclusive=False), "bench", 3, True, route("bench", 3)),
        (route("bench", 1, 2, exclusive=False), "bench", 1, True, route("bench", 1)),
    ],
)
def test_apply_tag(
    current: RouteView | None, tag: str, version: int, exclusive: bool, expected: RouteView
) -> None:
    assert apply_tag(current, "agent", tag, version, exclusive) == expected


@pytest.mark.parametrize(
    ("flow", "tag", "version", "error"),
    [
        ("Agent", "stable", 1, InvalidName),
        ("agent", "Stable", 1, InvalidName),
        ("agent", "-x", 1, InvalidName),
        ("agent", "x" * 64, 1, InvalidName),
        ("agent", "stable", 0, InvalidVersion),
    ],
)
def test_apply_tag_rejects(flow: str, tag: str, version: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        apply_tag(None, flow, tag, version, True)


def test_apply_tag_refuses_another_route() -> None:
    with pytest.raises(ValueError, match="is not"):
        apply_tag(route("stable", 1), "agent", "prod", 2, True)


@pytest.mark.parametrize(
    ("current", "version", "expected"),
    [
        (route("stable", 2), 2, None),
        (route("bench", 2, exclusive=False), 2, None),
        (route("bench", 1, 2, exclusive=False), 2, route("bench", 1, exclusive=False)),
        (route("bench", 1, 2, 3, exclusive=False), 1, route("bench", 2, 3, exclusive=False)),
    ],
)
def test_remove_tag(current: RouteView, version: int, expected: RouteView | None) -> None:
    assert remove_tag(current, version) == expected


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        (route("stable", 2), None),
        (route("bench", 2, exclusive=False), None),
    ],
)
def test_remove_tag_without_a_version_takes_its_only_one(
    current: RouteView, expected: RouteView | None
) -> None:
    assert remove_tag(current, None) == expected


def test_remove_tag_without_a_version_of_several_needs_one() -> None:
    with pytest.raises(AmbiguousUntag, match=r"routes to versions 1, 2; pass --version") as caught:
        remove_tag(route("bench", 1, 2, exclusive=False), None)
    assert caught.value.reason == "AmbiguousTag"


def test_default_cannot_be_removed() -> None:
    with pytest.raises(TagError) as caught:
        remove_tag(route("default", 1), 1)
    with pytest.raises(TagError, match="cannot be removed, only moved"):
        remove_tag(route("default", 1), None)
    assert "cannot be removed, only moved" in str(caught.value)
    assert "kitaru flow tag agent default --version N --exclusive" in str(caught.value)


def test_remove_tag_from_a_version_it_does_not_route_to() -> None:
    with pytest.raises(TagError, match=r"does not route to version 3 \(it routes to 1, 2\)"):
        remove_tag(route("bench", 1, 2, exclusive=False), 3)


ROUTES = [
    route("stable", 2),
    route("bench", 1, 2, exclusive=False),
    route("default", 2),
    route("canary", 3),
    route("alpha", 1, exclusive=False),
]


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (
            2,
            [
                TagRef(tag="default", exclusive=True),
                TagRef(tag="bench", exclusive=False),
                TagRef(tag="stable", exclusive=True),
            ],
        ),
        (1, [TagRef(tag="alpha", exclusive=False), TagRef(tag="bench", exclusive=False)]),
        (3, [TagRef(tag="canary", exclusive=True)]),
        (4, []),
    ],
)
def test_tags_for_version(version: int, expected: list[TagRef]) -> None:
    assert tags_for_version(ROUTES, version) == expected


@pytest.mark.parametrize(
    ("versions", "new", "has_default", "expected"),
    [
        ([1], [1], False, route("default", 1)),  # the first deployment
        ([3, 1, 2], [3], False, route("default", 1)),  # the lowest version, not the new one
        ([1, 2], [2], True, None),  # `default` exists: nothing to do
        ([1, 2], [], False, None),  # nothing new: a flow being deleted stays deleted
    ],
)
def test_bootstrap_default(
    versions: list[int], new: list[int], has_default: bool, expected: RouteView | None
) -> None:
    assert bootstrap_default("agent", versions, new, has_default) == expected
