"""One pass of a FlowSchedule (`kitaru.core.schedules`): CronJob's missed-tick rules,
concurrency policies, history limits and the status, with the clock passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kitaru.core.cron import InvalidSchedule
from kitaru.core.models import FlowScheduleSpec, FlowScheduleStatus
from kitaru.core.names import InvalidName
from kitaru.core.schedules import (
    MISSED_LIMIT,
    ScheduledRun,
    build_schedule,
    build_scheduled_run,
    due_tick,
    plan_pass,
    run_name,
)

CREATED = datetime(2026, 1, 1, 9, 0, 30, tzinfo=UTC)


def spec(**fields: Any) -> FlowScheduleSpec:
    return FlowScheduleSpec.model_validate(
        {"schedule": "* * * * *", "flow": "research_agent", **fields}
    )


def status(**fields: Any) -> FlowScheduleStatus:
    return FlowScheduleStatus.model_validate(fields)


def at(minute: int, second: int = 0) -> datetime:
    return datetime(2026, 1, 1, 10, minute, second, tzinfo=UTC)


def run(name: str, phase: str | None = None, finished: datetime | None = None) -> ScheduledRun:
    return ScheduledRun(name, phase, finished)


def plan(sp: FlowScheduleSpec, st: FlowScheduleStatus, now: datetime, runs: Any = ()) -> Any:
    return plan_pass("nightly", sp, st, created=CREATED, generation=1, runs=runs, now=now)


def test_run_names_are_the_schedule_and_the_minute() -> None:
    assert run_name("nightly", at(5)) == f"nightly-{int(at(5).timestamp()) // 60}"
    assert len(run_name("x" * 52, datetime(2286, 1, 1, tzinfo=UTC))) <= 63


def test_a_due_tick_starts_once_and_records_it() -> None:
    first = plan(spec(), status(lastScheduleTime="2026-01-01T10:04:00Z"), at(5, 1))
    assert first.fire == at(5)
    assert first.status.last_schedule_time == "2026-01-01T10:05:00Z"
    assert first.status.next_schedule_time == "2026-01-01T10:06:00Z"
    assert first.status.active == [run_name("nightly", at(5))]
    assert first.next_tick == at(6)
    again = plan(spec(), first.status, at(5, 30))  # the same minute: nothing more
    assert again.fire is None


def test_a_new_schedule_waits_for_its_first_tick() -> None:
    decided = plan(spec(), status(), CREATED + timedelta(seconds=10))
    assert decided.fire is None
    assert decided.next_tick == datetime(2026, 1, 1, 9, 1, tzinfo=UTC)
    ready = decided.status.conditions[0]
    assert (ready.type, ready.status, ready.reason) == ("Ready", "True", "Scheduled")
    assert decided.status.target == "default"


def test_missed_ticks_run_only_the_latest() -> None:
    decided = plan(spec(), status(lastScheduleTime="2026-01-01T10:00:00Z"), at(7, 10))
    assert decided.fire == at(7)
    assert decided.missed == 7
    assert decided.events == []


def test_more_than_100_missed_ticks_are_reported() -> None:
    last = at(0) - timedelta(days=3)
    due = due_tick(spec(), last, at(0, 5))
    assert due.tick == at(0)
    assert due.missed == MISSED_LIMIT + 1
    decided = plan(spec(), status(lastScheduleTime="2025-12-29T10:00:00Z"), at(0, 5))
    assert decided.fire == at(0)
    assert decided.events[0][0] == "TooManyMissedTimes"


def test_the_starting_deadline_drops_ticks_too_old_to_start() -> None:
    sp = spec(schedule="0 * * * *", startingDeadlineSeconds=300)
    # Down from 08:30 to 10:07: the 10:00 tick is 7 minutes late, past the 5-minute deadline.
    assert plan(sp, status(lastScheduleTime="2026-01-01T08:00:00Z"), at(7)).fire is None
    # Back at 10:04: still within the deadline.
    assert plan(sp, status(lastScheduleTime="2026-01-01T08:00:00Z"), at(4)).fire == at(0)
    # Without a deadline the latest missed tick always runs.
    unbounded = spec(schedule="0 * * * *")
    assert plan(unbounded, status(lastScheduleTime="2026-01-01T08:00:00Z"), at(59)).fire == at(0)


def test_forbid_skips_while_a_run_is_unfinished() -> None:
    running = [run("nightly-1", "Running")]
    decided = plan(
        spec(concurrencyPolicy="Forbid"),
        status(lastScheduleTime="2026-01-01T10:04:00Z"),
        at(5, 1),
        running,
    )
    assert decided.fire is None
    assert decided.skipped is not None and "nightly-1 still running" in decided.skipped
    assert decided.status.last_schedule_time == "2026-01-01T10:05:00Z"  # consumed
    assert decided.status.active == ["nightly-1"]
    finished = [run("nightly-1", "Failed", at(4))]
    again = plan(spec(concurrencyPolicy="Forbid"), decided.status, at(6, 1), finished)
    assert again.fire == at(6)


def test_replace_cancels_the_unfinished_runs_then_starts() -> None:
    running = [run("nightly-1", "Running"), run("nightly-2")]
    decided = plan(
        spec(concurrencyPolicy="Replace"),
        status(lastScheduleTime="2026-01-01T10:04:00Z"),
        at(5, 1),
        running,
    )
    assert decided.cancel == ("nightly-1", "nightly-2")
    assert decided.fire == at(5)


def test_allow_starts_beside_unfinished_runs() -> None:
    decided = plan(
        spec(), status(lastScheduleTime="2026-01-01T10:04:00Z"), at(5, 1), [run("n-1", "Running")]
    )
    assert decided.cancel == ()
    assert decided.fire == at(5)
    assert decided.status.active == sorted(["n-1", run_name("nightly", at(5))])


def test_history_limits_prune_the_oldest_finished_runs() -> None:
    runs = [run(f"ok-{i}", "Completed", at(i)) for i in range(5)]
    runs += [run(f"bad-{i}", "Failed" if i % 2 else "Cancelled", at(i)) for i in range(3)]
    runs.append(run("live", "Running"))
    decided = plan(
        spec(successfulRunsHistoryLimit=2, failedRunsHistoryLimit=1),
        status(lastScheduleTime="2026-01-01T10:30:00Z"),
        at(30, 5),
        runs,
    )
    assert sorted(decided.prune) == ["bad-0", "bad-1", "ok-0", "ok-1", "ok-2"]
    assert decided.status.last_successful_time == "2026-01-01T10:04:00Z"
    assert decided.status.active == ["live"]


def test_suspended_schedules_start_nothing_and_catch_up_when_resumed() -> None:
    st = status(lastScheduleTime="2026-01-01T10:00:00Z")
    suspended = plan(spec(suspend=True), st, at(3, 1))
    assert suspended.fire is None
    assert suspended.status.next_schedule_time is None
    assert suspended.status.conditions[0].reason == "Suspended"
    resumed = plan(spec(), suspended.status, at(9, 1))
    assert resumed.fire == at(9)  # the ticks missed while suspended: only the latest runs


def test_an_unusable_schedule_is_reported_on_status() -> None:
    decided = plan(spec(schedule="61 * * * *"), status(), at(5))
    assert decided.fire is None and decided.error is not None
    ready = decided.status.conditions[0]
    assert (ready.status, ready.reason) == ("False", "InvalidSchedule")
    assert "minute 61 is out of range 0-59" in ready.message
    zone = plan(spec(timeZone="Mars/Olympus"), status(), at(5))
    assert zone.status.conditions[0].reason == "UnknownTimeZone"


def test_the_tick_run_is_owned_labelled_and_routes_like_any_invocation() -> None:
    schedule = {"metadata": {"name": "nightly", "uid": "u-1"}}
    body = build_scheduled_run(schedule, spec(tag="stable", inputs={"topic": "cron"}), at(5))
    assert body["metadata"]["name"] == run_name("nightly", at(5))
    assert body["metadata"]["labels"] == {
        "kitaru.dev/flow": "research_agent",
        "kitaru.dev/schedule": "nightly",
    }
    assert body["metadata"]["annotations"] == {"kitaru.dev/scheduled-at": "2026-01-01T10:05:00Z"}
    owner = body["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("FlowSchedule", "u-1", True)
    assert body["spec"] == {"flow": "research_agent", "inputs": {"topic": "cron"}, "tag": "stable"}


def test_build_schedule_checks_every_field_before_anything_is_written() -> None:
    body = build_schedule(
        "nightly", "research_agent", "0 3 * * *", time_zone="Europe/Berlin", tag="stable"
    )
    assert body["metadata"] == {"name": "nightly", "labels": {"kitaru.dev/flow": "research_agent"}}
    assert body["spec"]["timeZone"] == "Europe/Berlin" and body["spec"]["tag"] == "stable"
    cases = {
        "InvalidSchedule": {"cron": "61 * * * *"},
        "UnknownTimeZone": {"time_zone": "Mars/Olympus"},
        "ConflictingSelectors": {"tag": "a", "version": 1},
        "InvalidConcurrencyPolicy": {"concurrency_policy": "forbid"},
        "InvalidStartingDeadline": {"starting_deadline_seconds": 0},
        "InvalidHistoryLimit": {"failed_runs_history_limit": 1001},
    }
    for reason, fields in cases.items():
        arguments: dict[str, Any] = {"cron": "@daily", **fields}
        cron = arguments.pop("cron")
        with pytest.raises(InvalidSchedule) as caught:
            build_schedule("nightly", "research_agent", cron, **arguments)
        assert caught.value.reason == reason, (reason, caught.value.message)
    with pytest.raises(InvalidName, match="at most 52 characters"):
        build_schedule("x" * 53, "research_agent", "@daily")
    with pytest.raises(InvalidName, match="invalid flow name"):
        build_schedule("nightly", "Research", "@daily")
