"""Route history rules (kitaru.core.history): recording, "at T", rollback, attribution."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from kitaru.core.history import (
    Attribution,
    HistoryNotCurrent,
    HistoryTooShort,
    NoPreviousTarget,
    attribution,
    change_record,
    parse_time,
    record_change,
    rollback_target,
    shown_by,
    targets_at,
)
from kitaru.core.models import FlowHistorySpec, RouteChangeAction
from kitaru.core.routing import RouteView


def view(tag: str, *versions: int, exclusive: bool = True) -> RouteView:
    return RouteView("research_agent", tag, exclusive, frozenset(versions))


def at(second: int) -> Attribution:
    return Attribution(at=f"2025-06-01T12:00:{second:02d}Z", by="alice", by_source="annotation")


def story() -> FlowHistorySpec:
    history = FlowHistorySpec(flow="research_agent")
    record_change(history, "stable", view("stable", 2), at(0))
    record_change(history, "stable", view("stable", 3), at(10))
    record_change(history, "stable", view("stable", 2), at(20))
    return history


def test_moves_are_recorded_from_to() -> None:
    history = story()
    assert [(c.action, c.from_versions, c.to_versions) for c in history.changes] == [
        (RouteChangeAction.CREATED, [], [2]),
        (RouteChangeAction.MOVED, [2], [3]),
        (RouteChangeAction.MOVED, [3], [2]),
    ]
    assert [c.seq for c in history.changes] == [1, 2, 3]


def test_a_repeated_event_records_nothing() -> None:
    history = story()
    assert record_change(history, "stable", view("stable", 2), at(30)) is None
    assert len(history.changes) == 3


@pytest.mark.parametrize(
    ("when", "expected"),
    [("2025-06-01T12:00:05Z", [2]), ("2025-06-01T12:00:15Z", [3]), ("2025-06-01T12:00:20Z", [2])],
)
def test_what_stable_routed_to_at_a_time(when: str, expected: list[int]) -> None:
    assert targets_at(story(), parse_time(when)) == {"stable": expected}


def test_before_the_history_is_unknown() -> None:
    with pytest.raises(HistoryTooShort):
        targets_at(story(), parse_time("2025-06-01T11:00:00Z"))


def test_bounded_and_deletions_recorded() -> None:
    history = FlowHistorySpec(flow="research_agent")
    for second in range(10):
        record_change(history, "canary", view("canary", second + 1), at(second), limit=4)
    record_change(history, "canary", None, at(30), limit=4)
    assert len(history.changes) == 4
    assert history.changes[-1].action == RouteChangeAction.DELETED
    assert history.routes == []


def test_rollback_goes_to_the_previous_target() -> None:
    history = FlowHistorySpec(flow="research_agent")
    record_change(history, "stable", view("stable", 2), at(0))
    record_change(history, "stable", view("stable", 3), at(10))
    assert rollback_target(history, "stable", view("stable", 3)) == view("stable", 2)


def test_rollback_of_a_new_route_or_a_stale_history_is_refused() -> None:
    history = FlowHistorySpec(flow="research_agent")
    record_change(history, "stable", view("stable", 2), at(0))
    with pytest.raises(NoPreviousTarget, match="had no previous target"):
        rollback_target(history, "stable", view("stable", 2))
    with pytest.raises(HistoryNotCurrent):
        rollback_target(history, "stable", view("stable", 5))
    with pytest.raises(NoPreviousTarget, match="no recorded change"):
        rollback_target(history, "canary", None)


def test_a_deleted_route_rolls_back_to_what_it_was() -> None:
    history = FlowHistorySpec(flow="research_agent")
    record_change(history, "beta", view("beta", 1, 2, exclusive=False), at(0))
    record_change(history, "beta", None, at(5))
    assert rollback_target(history, "beta", None) == view("beta", 1, 2, exclusive=False)


NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
KUBECTL = {"manager": "kubectl-edit", "time": "2025-06-01T12:00:07Z", "fieldsV1": {"f:spec": {}}}


def test_the_client_annotation_counts_only_for_its_generation() -> None:
    annotations = {
        "kitaru.dev/changed-by": "alice",
        "kitaru.dev/change-generation": "2",
        "kitaru.dev/reason": "hotfix",
    }
    fresh = attribution({"annotations": annotations, "generation": 2, "managedFields": []}, NOW)
    assert (fresh.by, fresh.by_source, fresh.reason) == ("alice", "annotation", "hotfix")
    stale = attribution(
        {"annotations": annotations, "generation": 3, "managedFields": [KUBECTL]}, NOW
    )
    assert (stale.by, stale.by_source, stale.reason, stale.at) == (
        "kubectl-edit",
        "managedFields",
        "",
        "2025-06-01T12:00:07Z",
    )


def test_a_kubectl_write_in_the_clients_second_is_kubectls() -> None:
    """Whole-second times tie; the client's entry still owns spec fields it set before.
    A stale claim means the client did not make the last write, so its entry is out."""
    client = {
        "manager": "kitaru",
        "time": "2025-06-01T12:00:07Z",
        "fieldsV1": {"f:spec": {"f:flow": {}, "f:versions": {}}},
    }
    patch = {
        "manager": "kubectl-patch",
        "time": "2025-06-01T12:00:07Z",
        "fieldsV1": {"f:spec": {"f:versions": {"v:1": {}}}},
    }
    annotations = {"kitaru.dev/changed-by": "alice", "kitaru.dev/change-generation": "3"}
    for entries in ([client, patch], [patch, client]):
        who = attribution(
            {"annotations": annotations, "generation": 4, "managedFields": entries}, NOW
        )
        assert (who.by, who.by_source) == ("kubectl-patch", "managedFields")


def test_every_surface_says_whether_by_was_verified_or_inferred() -> None:
    history = FlowHistorySpec(flow="research_agent")
    record_change(history, "stable", view("stable", 2), at(0))
    forged = Attribution(at="2025-06-01T12:00:30Z", by="alice", by_source="managedFields")
    record_change(history, "stable", view("stable", 3), forged)
    expired = Attribution(at="2025-06-01T12:00:40Z", by="kitaru-operator", by_source="operator")
    record_change(history, "stable", None, expired)
    unknown = Attribution(at="2025-06-01T12:00:50Z")
    record_change(history, "stable", view("stable", 1), unknown)
    records = [change_record(c) for c in history.changes]
    assert [(r["by"], r["bySource"], r["byVerified"]) for r in records] == [
        ("alice", "annotation", True),
        ("alice", "managedFields", False),
        ("kitaru-operator", "operator", True),
        ("", "", False),
    ]
    assert [shown_by(r) for r in records] == [
        "alice (verified)",
        "alice (inferred)",
        "kitaru-operator (verified)",
        "?",
    ]
