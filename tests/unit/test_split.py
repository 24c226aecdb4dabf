"""Weighted, sticky routes: the pure rules (parse, split, untag, resolve, history)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
from kitaru.core.history import Attribution, classify, record_change, rollback_target
from kitaru.core.models import FlowHistorySpec, FlowRouteSpec, RouteChangeAction, RouteMode
from kitaru.core.routing import (
    AmbiguousTag,
    RouteView,
    pick_version,
    resolve,
    split_bucket,
    split_reason,
)
from kitaru.core.status import derive_route_status
from kitaru.core.tagging import (
    InvalidSplit,
    apply_tag,
    parse_split,
    remove_tag,
    split_tag,
    tags_for_version,
)

from tests.unit.test_routing import index

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def stable_split(**weights: int) -> RouteView:
    return split_tag(None, "agent", "stable", {int(v[1:]): w for v, w in weights.items()})


def test_parse_split() -> None:
    assert parse_split("2=90,3=10") == {2: 90, 3: 10}
    assert parse_split(" 2 = 90 , 3=10 ") == {2: 90, 3: 10}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("2:90,3:10", "VERSION=WEIGHT pairs"),
        ("2=90,", "VERSION=WEIGHT pairs"),
        ("2=ninety,3=10", "VERSION=WEIGHT pairs"),
        ("2=-5,3=105", "VERSION=WEIGHT pairs"),
        ("2=50,2=50", "names version 2 twice"),
    ],
)
def test_parse_split_refuses(text: str, fragment: str) -> None:
    with pytest.raises(InvalidSplit, match=fragment):
        parse_split(text)


def test_split_tag_routes_to_exactly_the_versions_named() -> None:
    shared = RouteView("agent", "stable", False, frozenset({1, 2}))
    view = split_tag(shared, "agent", "stable", {3: 10, 2: 90})
    assert view == RouteView("agent", "stable", False, frozenset({2, 3}), ((2, 90), (3, 10)))
    assert view.weighted
    assert view.to_spec() == FlowRouteSpec.model_validate(
        {
            "flow": "agent",
            "tag": "stable",
            "exclusive": False,
            "versions": [2, 3],
            "split": [{"version": 2, "weight": 90}, {"version": 3, "weight": 10}],
        }
    )


@pytest.mark.parametrize(
    ("tag", "weights", "fragment"),
    [
        ("default", {1: 50, 2: 50}, "the 'default' tag cannot be split"),
        ("stable", {2: 100}, "a split names 2 to 16 versions"),
        ("stable", {v: 5 for v in range(1, 21)}, "a split names 2 to 16 versions"),
        ("stable", {2: 90, 3: 20}, "2=90,3=20 adds up to 110"),
        ("stable", {2: 150, 3: -50}, "the weight of version 2 is 150: use 0 to 100"),
    ],
)
def test_split_tag_refuses(tag: str, weights: dict[int, int], fragment: str) -> None:
    with pytest.raises(InvalidSplit, match=fragment):
        split_tag(None, "agent", tag, weights)


def test_a_tag_command_ends_the_split() -> None:
    split = stable_split(v2=90, v3=10)
    assert apply_tag(split, "agent", "stable", 3, True) == RouteView(
        "agent", "stable", True, frozenset({3})
    )
    assert apply_tag(split, "agent", "stable", 4, False) == RouteView(
        "agent", "stable", False, frozenset({2, 3, 4})
    )


def test_untag_takes_a_split_tag_off_all_its_versions_or_explains() -> None:
    split = stable_split(v2=90, v3=10)
    assert remove_tag(split, None) is None
    with pytest.raises(InvalidSplit, match="--version 2 --exclusive, or remove the whole tag"):
        remove_tag(split, 3)
    three = stable_split(v2=50, v3=25, v4=25)
    with pytest.raises(InvalidSplit, match="--split 3=50,4=50"):
        remove_tag(three, 2)


def test_split_versions_carry_their_weight_in_the_tag_list() -> None:
    routes = [stable_split(v2=90, v3=10), RouteView("agent", "default", True, frozenset({2}))]
    refs = tags_for_version(routes, 3)
    assert [(r.tag, r.exclusive, r.weight) for r in refs] == [("stable", False, 10)]
    refs = tags_for_version(routes, 2)
    assert [(r.tag, r.weight) for r in refs] == [("default", None), ("stable", 90)]


def test_pick_version_takes_consecutive_ranges_in_version_order() -> None:
    split = ((2, 90), (3, 10))
    assert [pick_version(split, b) for b in (0, 89, 90, 99)] == [2, 2, 3, 3]
    assert pick_version(((1, 0), (2, 100)), 0) == 2


def test_1000_invocations_at_90_10_land_within_3_percent() -> None:
    lookup = index({1, 2, 3}, stable_split(v2=90, v3=10))
    got = Counter(
        resolve(lookup, "agent", "stable", invocation=f"agent-{i:05x}").version for i in range(1000)
    )
    assert abs(got[3] - 100) <= 30, got


def test_the_same_key_always_lands_on_the_same_version() -> None:
    lookup = index({1, 2, 3}, stable_split(v2=50, v3=50))
    for key in ("user-1", "user-2", "tenant/acme", "ü"):
        versions = {
            resolve(lookup, "agent", "stable", routing_key=key, invocation=f"run-{i}").version
            for i in range(50)
        }
        assert len(versions) == 1, key
    assert split_bucket("agent", "user-1") == split_bucket("agent", "user-1")


def test_resolution_records_the_choice_and_why() -> None:
    lookup = index({1, 2, 3}, stable_split(v2=90, v3=10))
    keyed = resolve(lookup, "agent", "stable", routing_key="user-1")
    assert keyed.split is not None and keyed.split.sticky
    assert keyed.split.bucket == split_bucket("agent", "user-1")
    assert keyed.version == pick_version(((2, 90), (3, 10)), keyed.split.bucket)
    assert split_reason(keyed.split) == (
        f"split 2=90,3=10: bucket {keyed.split.bucket} of 0-99 by routing key"
    )
    named = resolve(lookup, "agent", "stable", invocation="agent-abcde")
    assert named.split is not None and not named.split.sticky
    assert named.split.bucket == split_bucket("agent", "agent-abcde")
    assert resolve(lookup, "agent", version=1, routing_key="user-1").split is None


def test_a_shared_tag_suggests_a_split() -> None:
    lookup = index({1, 2}, RouteView("agent", "bench", False, frozenset({1, 2})))
    with pytest.raises(AmbiguousTag, match="kitaru flow tag agent bench --split 1=50,2=50"):
        resolve(lookup, "agent", "bench")


def test_route_status_of_a_split_tag() -> None:
    status = derive_route_status(stable_split(v2=90, v3=10).to_spec(), {2, 3}, None, 1, NOW)
    assert status.mode == RouteMode.WEIGHTED
    assert status.split_summary == "2=90,3=10"
    assert status.resolved_version is None
    (ready,) = status.conditions
    assert (ready.reason, ready.message) == (
        "Split",
        "tag 'stable' of flow 'agent' splits its invocations by weight: 2=90,3=10 "
        "(version=percent)",
    )


def test_history_records_weight_changes_and_rollback_restores_them() -> None:
    history = FlowHistorySpec(flow="agent")
    who = Attribution(at="2026-01-01T00:00:00Z")
    record_change(history, "stable", RouteView("agent", "stable", True, frozenset({2})), who)
    first = stable_split(v2=90, v3=10)
    moved = record_change(history, "stable", first, who)
    assert moved is not None and moved.action == RouteChangeAction.ADDED
    assert [(w.version, w.weight) for w in moved.to_split] == [(2, 90), (3, 10)]
    second = stable_split(v2=50, v3=50)
    (recorded,) = history.routes
    assert classify(recorded, second) == RouteChangeAction.REWEIGHTED
    reweighted = record_change(history, "stable", second, who)
    assert reweighted is not None
    assert [w.weight for w in reweighted.from_split] == [90, 10]
    assert record_change(history, "stable", second, who) is None  # a repeated event
    assert rollback_target(history, "stable", second) == first
    shared = RouteView("agent", "stable", False, frozenset({2, 3}))
    (recorded,) = history.routes
    assert classify(recorded, shared) == RouteChangeAction.MODE_CHANGED
    record_change(history, "stable", shared, who)
    assert rollback_target(history, "stable", shared) == second
    record_change(history, "stable", stable_split(v2=10, v3=90), who)
    assert rollback_target(history, "stable", stable_split(v2=10, v3=90)) == shared
