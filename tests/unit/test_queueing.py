"""Concurrency limits, pure: the FIFO order, slots, positions and the Queued status."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from kitaru.core.invocations import Queued, derive_invocation_status
from kitaru.core.models import FlowInvocationSpec, Phase
from kitaru.core.queueing import (
    HEAD,
    ActiveRuns,
    FlowQueue,
    Limits,
    has_slot,
    queued_message,
    reported_position,
)

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"


def test_the_queue_is_first_in_first_out_by_time_then_revision() -> None:
    queue = FlowQueue()
    queue.add((T1, 5), "late", "stable")
    queue.add((T0, 9), "second", "stable")
    queue.add((T0, 3), "zz-first", None)  # same second, earlier revision: first
    queue.add((T0, 3), "zz-first", None)  # idempotent
    assert queue.head(None, True, 10) == ["zz-first", "second", "late"]
    assert [queue.position(n, True) for n in ("zz-first", "second", "late")] == [1, 2, 3]
    # Under route limits only, a run competes with runs of its own tag.
    assert queue.head("stable", False, 10) == ["second", "late"]
    assert queue.position("late", False) == 2
    assert queue.remove("second") == "stable"
    assert queue.position("late", True) == 2 and queue.position("late", False) == 1
    assert len(queue) == 2


def test_removing_the_last_run_of_a_tag_drops_its_line() -> None:
    queue = FlowQueue()
    queue.add((T0, 1), "a", "canary")
    queue.remove("a")
    assert queue.by_tag == {} and queue.head("canary", False) == []


def test_active_runs_are_counted_per_flow_and_per_route_once() -> None:
    active = ActiveRuns()
    active.add(("ns", "a"), "f", "stable")
    active.add(("ns", "a"), "f", "stable")  # the Job informer and the admission: once
    active.add(("ns", "b"), "f", None)
    active.add(("other", "c"), "f", "stable")
    assert (active.of_flow("ns", "f"), active.of_route("ns", "f", "stable")) == (2, 1)
    assert active.remove(("ns", "a")) == ("f", "stable")
    assert active.remove(("ns", "a")) is None
    assert (active.of_flow("ns", "f"), active.of_route("ns", "f", "stable")) == (1, 0)
    assert active.per_route == {("ns", "f", None): 1, ("other", "f", "stable"): 1}


@pytest.mark.parametrize(
    ("limits", "in_flow", "in_route", "free"),
    [
        (Limits(), 100, 100, True),
        (Limits(flow=3), 2, 0, True),
        (Limits(flow=3), 3, 0, False),
        (Limits(route=1), 5, 0, True),
        (Limits(route=1), 0, 1, False),
        (Limits(flow=3, route=2), 2, 2, False),
        (Limits(flow=3, route=2), 2, 1, True),
    ],
)
def test_a_slot_is_free_only_under_every_limit(
    limits: Limits, in_flow: int, in_route: int, free: bool
) -> None:
    assert has_slot(limits, in_flow, in_route) is free


@pytest.mark.parametrize(
    ("exact", "previous", "written"),
    [
        (500, None, 500),  # first write
        (HEAD, 11, HEAD),  # near the head: exact
        (400, 500, 500),  # not halfway closer yet: no write
        (250, 500, 250),  # halved
        (600, 500, 600),  # moved back (an older run came back in line): exact
    ],
)
def test_positions_far_back_are_rewritten_only_when_halved(
    exact: int, previous: int | None, written: int
) -> None:
    assert reported_position(exact, previous) == written


def test_status_writes_for_a_drained_queue_grow_as_n_log_n() -> None:
    """A queue of n drained from the head: each run's position is written about
    log2(n) + HEAD times, not n times."""
    n = 4096
    writes = 0
    for start in range(1, n + 1):
        written = None
        for exact in range(start, 0, -1):
            new = reported_position(exact, written)
            writes += new != written
            written = new
    assert writes < n * (12 + HEAD + 1)  # vs n²/2 ≈ 8.4 million


def test_the_queued_message_names_each_limit_and_stays_put() -> None:
    assert queued_message(Limits(flow=3, route=1), "stable") == (
        "waiting for a slot: the flow allows 3 active run(s) and tag 'stable' allows 1 "
        "active run(s); starts first-in first-out"
    )


def test_a_queued_run_has_phase_queued_its_position_and_no_job() -> None:
    spec = FlowInvocationSpec(flow="f")
    status = derive_invocation_status(spec, None, Queued(4, "waiting", 17), None, [], T0)
    assert (status.phase, status.queue_position, status.queue_revision) == (Phase.QUEUED, 4, 17)
    assert status.job_name is None and not status.phase.finished
    succeeded = status.conditions[0]
    assert (succeeded.type, succeeded.status, succeeded.reason) == (
        "Succeeded",
        "Unknown",
        "Queued",
    )
    # Cancelled while queued: Cancelled without a run.
    cancelled = derive_invocation_status(
        FlowInvocationSpec(flow="f", cancel_requested=True),
        status,
        None,
        None,
        [],
        datetime.now(UTC),
    )
    assert (cancelled.phase, cancelled.queue_position) == (Phase.CANCELLED, None)
