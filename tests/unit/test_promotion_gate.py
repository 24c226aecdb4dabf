"""The gate of a promotion (kitaru.core.promotion): pure, no cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from kitaru.core.models import FlowPromotionSpec, PromotionPhase
from kitaru.core.promotion import (
    CandidateError,
    InvalidPromotion,
    Tally,
    candidate_of,
    check_request,
    evaluate,
    parse_window,
)
from kitaru.core.routing import RouteView

CREATED = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
CANARY = RouteView("agent", "canary", True, frozenset({3}))
STABLE = RouteView("agent", "stable", True, frozenset({2}))
SCHEMA = {"type": "object", "properties": {"topic": {"type": "string"}}}


def spec(**changes: object) -> FlowPromotionSpec:
    fields = {"flow": "agent", "from_tag": "canary", "to_tag": "stable", "min_runs": 20}
    return FlowPromotionSpec.model_validate({**fields, **changes})


def run(
    tally: Tally,
    promotion: FlowPromotionSpec | None = None,
    *,
    after: timedelta = timedelta(minutes=1),
    previous=None,
    from_route: RouteView | None = CANARY,
    to_route: RouteView | None = STABLE,
    schemas=None,
    pending_before: str | None = None,
):
    return evaluate(
        "agent.stable-x",
        promotion or spec(),
        CREATED,
        CREATED + after,
        previous,
        from_route,
        to_route,
        tally,
        schemas if schemas is not None else {2: SCHEMA, 3: SCHEMA},
        1,
        pending_before,
    )


def test_twenty_successful_runs_move_the_tag_with_the_numbers_in_the_history() -> None:
    decision = run(Tally(succeeded=20))
    assert decision.status.phase == PromotionPhase.PROMOTED
    assert decision.status.reason == "GateMet"
    assert decision.move == RouteView("agent", "stable", True, frozenset({3}))
    assert decision.history_reason == (
        "promotion agent.stable-x: 20 runs, 20 completed, 0 failed, success 1.00 >= 0.95"
    )
    assert decision.status.previous_versions == [2]
    assert decision.status.candidate_version == 3
    assert decision.status.success_rate == 1.0


def test_failures_below_the_threshold_end_it_not_promoted() -> None:
    decision = run(Tally(succeeded=17, failed=3))
    assert decision.status.phase == PromotionPhase.NOT_PROMOTED
    assert decision.status.reason == "GateFailed"
    assert decision.move is None
    assert decision.status.message.startswith("success 0.85 < 0.95 after 20 runs of version 3")


def test_too_few_runs_wait_and_say_how_many() -> None:
    decision = run(Tally(succeeded=11, failed=1))
    assert decision.status.phase == PromotionPhase.WAITING
    assert decision.move is None
    assert decision.status.message == (
        "12 of 20 runs of version 3 finished (11 completed, 1 failed)"
    )
    assert decision.status.conditions[0].status == "Unknown"


def test_the_window_holds_the_move_until_it_ends() -> None:
    promotion = spec(after_seconds=3600)
    waiting = run(Tally(succeeded=20), promotion, after=timedelta(minutes=30))
    assert waiting.status.phase == PromotionPhase.WAITING
    assert "the window ends at 2026-01-01T13:00:00Z" in waiting.status.message
    later = run(Tally(succeeded=20), promotion, after=timedelta(hours=1))
    assert later.status.phase == PromotionPhase.PROMOTED


def test_zero_min_runs_is_a_time_gate() -> None:
    decision = run(Tally(), spec(min_runs=0))
    assert decision.status.phase == PromotionPhase.PROMOTED


def test_the_candidate_is_frozen_and_a_moved_canary_ends_it() -> None:
    first = run(Tally())
    assert first.status.candidate_version == 3
    moved = RouteView("agent", "canary", True, frozenset({4}))
    decision = run(Tally(succeeded=20), previous=first.status, from_route=moved)
    assert decision.status.reason == "CandidateMoved"
    assert decision.status.phase == PromotionPhase.NOT_PROMOTED


def test_counts_never_drop_below_the_recorded_status() -> None:
    first = run(Tally(succeeded=15, failed=1))
    again = run(Tally(succeeded=3), previous=first.status)
    assert (again.status.succeeded, again.status.failed) == (15, 1)


@pytest.mark.parametrize(
    ("from_route", "reason"),
    [
        (None, "TagNotFound"),
        (RouteView("agent", "canary", False, frozenset({3, 4})), "AmbiguousTag"),
    ],
)
def test_a_from_tag_without_one_version_is_not_promoted(from_route, reason) -> None:
    decision = run(Tally(), from_route=from_route)
    assert decision.status.phase == PromotionPhase.NOT_PROMOTED
    assert decision.status.reason == reason


def test_cancel_and_final_phases_are_final() -> None:
    cancelled = run(Tally(succeeded=20), spec(cancel_requested=True))
    assert cancelled.status.phase == PromotionPhase.CANCELLED
    assert cancelled.move is None
    again = run(Tally(succeeded=20), previous=cancelled.status)
    assert again.status == cancelled.status


def test_an_older_waiting_promotion_of_the_same_tag_goes_first() -> None:
    decision = run(Tally(succeeded=20), pending_before="agent.stable-old")
    assert decision.status.reason == "AnotherPromotionPending"
    assert "agent.stable-old" in decision.status.message


def test_an_incompatible_candidate_is_refused_unless_forced() -> None:
    narrowed = {"type": "object", "properties": {"topic": {"type": "integer"}}}
    refused = run(Tally(succeeded=20), schemas={2: SCHEMA, 3: narrowed})
    assert refused.status.reason == "IncompatibleSchema"
    assert "--force" in refused.status.message
    forced = run(Tally(succeeded=20), spec(force=True), schemas={2: SCHEMA, 3: narrowed})
    assert forced.status.phase == PromotionPhase.PROMOTED


def test_a_new_to_tag_is_created_and_one_already_there_is_not_written() -> None:
    created = run(Tally(succeeded=20), to_route=None)
    assert created.move is not None and created.status.previous_versions == []
    there = RouteView("agent", "stable", True, frozenset({3}))
    already = run(Tally(succeeded=20), to_route=there)
    assert already.status.phase == PromotionPhase.PROMOTED and already.move is None


@pytest.mark.parametrize(
    ("text", "seconds"), [(None, 0), ("0", 0), ("30m", 1800), ("1h", 3600), (90, 90)]
)
def test_windows(text, seconds) -> None:
    assert parse_window(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-1h", "2y", "0m"])
def test_bad_windows(text) -> None:
    with pytest.raises(InvalidPromotion, match="is not a duration"):
        parse_window(text)


def test_a_window_over_a_year_says_so() -> None:
    with pytest.raises(InvalidPromotion, match="between 0 and a year"):
        parse_window("400d")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("canary", "canary", 20, 0.95), "both 'canary'"),
        (("canary", "stable", -1, 0.95), "min runs -1"),
        (("canary", "stable", 20, 1.5), "min success 1.5"),
    ],
)
def test_bad_requests(args, needle) -> None:
    with pytest.raises(InvalidPromotion, match=needle):
        check_request("agent", *args)


def test_candidate_of_names_what_is_wrong() -> None:
    assert candidate_of("agent", "canary", CANARY) == 3
    with pytest.raises(CandidateError, match="has no tag 'canary'"):
        candidate_of("agent", "canary", None)
