"""The operator's view of scheduled runs without a cluster: only runs a schedule
controls (owner reference, by uid) are kept — a label alone is not enough — and a
schedule is woken when one of its runs finishes or vanishes unfinished — not on every
change, and not when a finished run is pruned."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from kitaru.core.schedules import ScheduledRun
from kitaru_operator.main import config_from, parse_args
from kitaru_operator.objects import ScheduledInvocation
from kitaru_operator.schedules import (
    CLOCK_ENV,
    RunRecord,
    ScheduleClock,
    ScheduledRuns,
    scheduled_run_record,
)

NS = "project"


UID = "uid-nightly"


def owner(name: str = "nightly", *, controller: bool = True, kind: str = "FlowSchedule") -> dict:
    return {
        "apiVersion": "kitaru.dev/v1alpha1",
        "kind": kind,
        "name": name,
        "uid": UID,
        "controller": controller,
    }


def invocation(
    name: str, phase: str | None, labels: dict[str, str], owners: list[dict] | None = None
) -> ScheduledInvocation:
    status = {"phase": phase, "completionTime": "2026-01-01T10:00:00Z" if phase else None}
    meta = {"name": name, "namespace": NS, "labels": labels, "ownerReferences": owners or []}
    return ScheduledInvocation.model_validate({"metadata": meta, "status": status})


def run(name: str, phase: str | None = None) -> RunRecord:
    record = scheduled_run_record(
        invocation(name, phase, {"kitaru.dev/schedule": "nightly"}, [owner()])
    )
    assert record is not None
    return record


def test_only_runs_a_schedule_controls_are_kept() -> None:
    assert scheduled_run_record(invocation("manual", None, {})) is None
    record = run("nightly-1", "Completed")
    assert record is not None and (record.schedule, record.schedule_uid) == ("nightly", UID)
    assert record.run.succeeded and record.run.completion_time is not None
    labelled = {"kitaru.dev/schedule": "nightly"}
    for owners in (
        [],  # a label alone (what a consumer's patch once did)
        [owner(controller=False)],
        [owner(kind="FlowInvocation")],
        [owner("weekly")],  # controlled by another schedule than its label names
    ):
        assert scheduled_run_record(invocation("x", "Completed", labelled, owners)) is None


def test_a_schedule_of_the_same_name_does_not_inherit_runs() -> None:
    runs = ScheduledRuns(lambda key: None)
    runs.upsert((NS, "nightly-1"), run("nightly-1", "Running"))
    assert [r.name for r in runs.of((NS, "nightly"), UID)] == ["nightly-1"]
    assert runs.of((NS, "nightly"), "uid-of-a-new-nightly") == []


def test_a_schedule_wakes_when_its_run_finishes_or_vanishes_unfinished() -> None:
    woken: list[tuple[str, str]] = []
    runs = ScheduledRuns(woken.append)
    runs.upsert((NS, "nightly-1"), run("nightly-1"))
    runs.upsert((NS, "nightly-1"), run("nightly-1", "Running"))
    assert woken == []
    runs.upsert((NS, "nightly-1"), run("nightly-1", "Failed"))
    runs.upsert((NS, "nightly-1"), run("nightly-1", "Failed"))
    assert woken == [(NS, "nightly")]
    runs.delete((NS, "nightly-1"))  # pruned after it finished: nothing to do
    assert woken == [(NS, "nightly")] and runs.of((NS, "nightly"), UID) == []
    runs.upsert((NS, "nightly-2"), run("nightly-2", "Running"))
    runs.delete((NS, "nightly-2"))  # deleted while running: active changes
    assert woken == [(NS, "nightly"), (NS, "nightly")]
    assert list(runs.keys(NS)) == []


def test_a_run_created_here_is_seen_before_its_watch_event() -> None:
    runs = ScheduledRuns(lambda key: None)
    runs.add(NS, "nightly", UID, ScheduledRun("nightly-3", None))
    assert [r.name for r in runs.of((NS, "nightly"), UID)] == ["nightly-3"]
    runs.upsert((NS, "nightly-3"), run("nightly-3", "Running"))
    assert [r.phase for r in runs.of((NS, "nightly"), UID)] == ["Running"]


def test_the_schedule_clock_is_real_time_unless_a_test_sets_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(CLOCK_ENV, raising=False)
    real = config_from(parse_args(["-A"])).schedule_clock
    before = datetime.now(UTC)
    assert before <= real() <= datetime.now(UTC)
    assert real.real_seconds(60) == 60
    monkeypatch.setenv(CLOCK_ENV, "1000:6")
    assert config_from(parse_args(["-A"])).schedule_clock == ScheduleClock(1000, 6)


def test_a_fast_schedule_clock_runs_minutes_in_seconds() -> None:
    origin = time.time() - 10  # started ten real seconds ago, at six times the pace
    clock = ScheduleClock.parse(f"{origin}:6")
    elapsed = (clock() - datetime.fromtimestamp(origin, UTC)).total_seconds()
    assert 60 <= elapsed < 66
    assert clock.real_seconds(60) == 10  # a timer for the next minute waits 10 s
    assert ScheduleClock.parse(str(clock)) == clock
    with pytest.raises(ValueError, match="the rate must be above 0"):
        ScheduleClock.parse("0:0")
