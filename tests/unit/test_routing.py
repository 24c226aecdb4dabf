from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from kitaru.core.models import FlowRouteSpec, SelectorKind
from kitaru.core.routing import (
    CONVERGING,
    AmbiguousTag,
    ConflictingSelectors,
    NoDefaultRoute,
    NoDeployments,
    Resolution,
    ResolutionError,
    RouteView,
    TagNotFound,
    VersionNotFound,
    resolve,
)


@dataclass
class Index:
    """An in-memory RouteLookup, like the operator's kopf indexes."""

    versions: dict[str, set[int]] = field(default_factory=dict)
    routes: dict[tuple[str, str], RouteView] = field(default_factory=dict)

    def has_deployments(self, flow: str) -> bool:
        return bool(self.versions.get(flow))

    def has_version(self, flow: str, version: int) -> bool:
        return version in self.versions.get(flow, set())

    def route(self, flow: str, tag: str) -> RouteView | None:
        return self.routes.get((flow, tag))


def route(tag: str, *versions: int, exclusive: bool = True, flow: str = "agent") -> RouteView:
    return RouteView(flow, tag, exclusive, frozenset(versions))


def index(versions: set[int], *routes: RouteView) -> Index:
    return Index({"agent": versions}, {(r.flow, r.tag): r for r in routes})


STORY = index(
    {1, 2, 3},
    route("default", 1),
    route("canary", 2),
    route("stable", 2),
    route("benchmark", 1, 2, exclusive=False),
    route("team-a", 3, exclusive=False),
    route("gone", 7),
)


@pytest.mark.parametrize(
    ("tag", "version", "expected"),
    [
        (None, None, Resolution(SelectorKind.DEFAULT, "default", 1)),
        ("default", None, Resolution(SelectorKind.TAG, "default", 1)),
        ("canary", None, Resolution(SelectorKind.TAG, "canary", 2)),
        ("stable", None, Resolution(SelectorKind.TAG, "stable", 2)),
        ("team-a", None, Resolution(SelectorKind.TAG, "team-a", 3)),  # shared, one version
        (None, 3, Resolution(SelectorKind.VERSION, None, 3)),
        (None, 1, Resolution(SelectorKind.VERSION, None, 1)),
    ],
)
def test_resolves(tag: str | None, version: int | None, expected: Resolution) -> None:
    assert resolve(STORY, "agent", tag=tag, version=version) == expected


@pytest.mark.parametrize(
    ("lookup", "flow", "tag", "version", "error", "fragments"),
    [
        (
            STORY,
            "other",
            None,
            None,
            NoDeployments,
            ["flow 'other' has no deployments yet", "kitaru deploy path/to/file.py:other"],
        ),
        (STORY, "other", "stable", None, NoDeployments, ["no deployments"]),
        (STORY, "other", None, 1, NoDeployments, ["no deployments"]),
        (
            index({1, 2}, route("stable", 2)),
            "agent",
            None,
            None,
            NoDefaultRoute,
            [
                "flow 'agent' has deployments but none is routed as 'default'",
                "invoke with --tag or --version",
                "kitaru flow tag agent default --version N --exclusive",
            ],
        ),
        (index({1}), "agent", "default", None, NoDefaultRoute, ["routed as 'default'"]),
        (
            STORY,
            "agent",
            "prod",
            None,
            TagNotFound,
            ["flow 'agent' has no tag 'prod'", "kitaru flow show agent"],
        ),
        (
            STORY,
            "agent",
            None,
            9,
            VersionNotFound,
            ["flow 'agent' has no version 9", "kitaru flow deployments list agent"],
        ),
        (
            STORY,
            "agent",
            "gone",
            None,
            VersionNotFound,
            ["tag 'gone' of flow 'agent' routes to version 7, which no longer exists"],
        ),
        (
            STORY,
            "agent",
            "benchmark",
            None,
            AmbiguousTag,
            [
                "tag 'benchmark' of flow 'agent' routes to versions 1, 2; invoke one of them "
                "with --version, make the tag exclusive, or split it: kitaru flow tag agent "
                "benchmark --split 1=50,2=50"
            ],
        ),
        (STORY, "agent", "stable", 2, ConflictingSelectors, ["not both"]),
        (STORY, "other", "stable", 2, ConflictingSelectors, ["not both"]),
    ],
)
def test_errors(
    lookup: Index,
    flow: str,
    tag: str | None,
    version: int | None,
    error: type[ResolutionError],
    fragments: list[str],
) -> None:
    with pytest.raises(error) as caught:
        resolve(lookup, flow, tag=tag, version=version)
    assert caught.value.reason == error.__name__
    assert str(caught.value) == caught.value.message
    for fragment in fragments:
        assert fragment in caught.value.message


@pytest.mark.parametrize(
    ("tag", "version", "missing"),
    [
        ("prod", None, ("agent", "prod", None)),  # the route
        (None, 9, ("agent", None, 9)),  # the version asked for
        ("gone", None, ("agent", "gone", 7)),  # the version a route names
    ],
)
def test_errors_that_may_be_not_yet_name_what_is_missing(
    tag: str | None, version: int | None, missing: tuple[str, str | None, int | None]
) -> None:
    """So the operator can ask the API server whether its own view is only behind."""
    with pytest.raises(CONVERGING) as caught:
        resolve(STORY, "agent", tag=tag, version=version)
    assert (caught.value.flow, caught.value.tag, caught.value.version) == missing
    assert not issubclass(AmbiguousTag, CONVERGING)
    assert not issubclass(ConflictingSelectors, CONVERGING)


def test_conflicting_selectors_is_a_value_error() -> None:
    assert issubclass(ConflictingSelectors, ValueError)
    assert issubclass(ConflictingSelectors, ResolutionError)


def test_ambiguous_versions_are_sorted_numerically() -> None:
    lookup = index({2, 10}, route("x", 10, 2, exclusive=False))
    with pytest.raises(AmbiguousTag, match="versions 2, 10;"):
        resolve(lookup, "agent", tag="x")


class CountingIndex(Index):
    calls: int = 0

    def route(self, flow: str, tag: str) -> RouteView | None:
        self.calls += 1
        return super().route(flow, tag)


def test_one_route_lookup_per_resolution() -> None:
    lookup = CountingIndex(
        {"agent": set(range(1, 10_001))}, {("agent", "default"): route("default", 1)}
    )
    resolve(lookup, "agent")
    assert lookup.calls == 1


def test_route_view_gives_a_spec_with_sorted_versions() -> None:
    spec = FlowRouteSpec(flow="agent", tag="bench", exclusive=False, versions=[1, 3])
    assert route("bench", 3, 1, exclusive=False).to_spec() == spec
