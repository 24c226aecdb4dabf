"""One pass of a FlowSchedule: which tick to start now, what to cancel or prune, and the
status to write — a pure function of the schedule, its runs and the time.

Missed ticks follow Kubernetes CronJobs: the ticks since `lastScheduleTime` (else the
schedule's creation), or only those within `startingDeadlineSeconds`, are counted; only
the latest runs; more than 100 are reported as such. A run is a FlowInvocation named
after the schedule and its tick (`run_name`), so starting the same tick twice — an
operator restart between creating the run and recording it — is a name conflict, not a
second run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kitaru.core.conditions import rfc3339, set_condition
from kitaru.core.cron import (
    InvalidSchedule,
    next_tick,
    parse_cron,
    previous_tick,
    time_zone,
)
from kitaru.core.models import FlowScheduleSpec, FlowScheduleStatus
from kitaru.core.names import (
    ANNOTATION_SCHEDULED_AT,
    GROUP_VERSION,
    LABEL_FLOW,
    LABEL_SCHEDULE,
    shown,
    validate_flow,
    validate_schedule_name,
    validate_tag,
    validate_version,
)

MISSED_LIMIT = 100
FINISHED_PHASES = frozenset({"Completed", "Failed", "Cancelled"})


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def run_name(schedule: str, tick: datetime) -> str:
    """The run of `schedule` for `tick`: `<schedule>-<minutes since the epoch>`."""
    return f"{schedule}-{int(tick.timestamp()) // 60}"


def target_text(spec: FlowScheduleSpec) -> str:
    if spec.tag:
        return f"tag {spec.tag}"
    if spec.version:
        return f"version {spec.version}"
    return "default"


def check_spec(spec: FlowScheduleSpec) -> None:
    """InvalidSchedule when the cron expression or the time zone cannot be used."""
    parse_cron(spec.schedule)
    time_zone(spec.time_zone)


@dataclass(frozen=True, slots=True)
class ScheduledRun:
    """What a pass needs of one run of the schedule."""

    name: str
    phase: str | None
    completion_time: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED_PHASES

    @property
    def succeeded(self) -> bool:
        return self.phase == "Completed"


@dataclass(frozen=True)
class DueTick:
    tick: datetime | None  # the latest missed tick, to run now
    missed: int  # ticks found since the last one handled (at most MISSED_LIMIT + 1)


def due_tick(spec: FlowScheduleSpec, last: datetime, now: datetime) -> DueTick:
    """The tick to start at `now`, given the last one handled (CronJob's rules)."""
    cron, zone = parse_cron(spec.schedule), time_zone(spec.time_zone)
    earliest = last
    if spec.starting_deadline_seconds is not None:
        earliest = max(earliest, now - timedelta(seconds=spec.starting_deadline_seconds))
    latest = previous_tick(cron, zone, now)
    if latest is None or latest <= earliest:
        return DueTick(None, 0)
    missed, tick = 0, next_tick(cron, zone, earliest)
    while tick is not None and tick <= latest and missed <= MISSED_LIMIT:
        missed += 1
        tick = next_tick(cron, zone, tick)
    return DueTick(latest, missed)


@dataclass(frozen=True)
class SchedulePass:
    status: FlowScheduleStatus
    fire: datetime | None = None  # start the run of this tick
    cancel: tuple[str, ...] = ()  # Replace: cancel these first
    skipped: str | None = None  # why the due tick was not started
    missed: int = 0
    prune: tuple[str, ...] = ()
    next_tick: datetime | None = None
    error: InvalidSchedule | None = None
    events: list[tuple[str, str, bool]] = field(default_factory=list)  # reason, msg, warn


def _prune(runs: Iterable[ScheduledRun], keep: int) -> list[str]:
    epoch = datetime.min.replace(tzinfo=UTC)
    newest_first = sorted(runs, key=lambda r: (r.completion_time or epoch, r.name), reverse=True)
    return [r.name for r in newest_first[keep:]]


def plan_pass(
    name: str,
    spec: FlowScheduleSpec,
    status: FlowScheduleStatus,
    *,
    created: datetime,
    generation: int | None,
    runs: Iterable[ScheduledRun],
    now: datetime,
) -> SchedulePass:
    """Everything one reconcile of the schedule does, decided from memory and the time."""
    runs = list(runs)
    finished = [r for r in runs if r.finished]
    active = sorted(r.name for r in runs if not r.finished)
    succeeded = [r for r in finished if r.succeeded]
    prune = _prune(succeeded, spec.successful_runs_history_limit) + _prune(
        [r for r in finished if not r.succeeded], spec.failed_runs_history_limit
    )
    completions = [r.completion_time for r in succeeded if r.completion_time]
    last_success = max(
        [*completions, *filter(None, [parse_time(status.last_successful_time)])], default=None
    )
    new = status.model_copy(
        update={
            "target": target_text(spec),
            "active": active,
            "last_successful_time": rfc3339(last_success) if last_success else None,
            "observed_generation": generation,
        }
    )
    events: list[tuple[str, str, bool]] = []

    def ready(ok: bool, reason: str, message: str) -> None:
        new.conditions = set_condition(
            new.conditions, "Ready", ok, reason, message, now, generation
        )

    try:
        check_spec(spec)
    except InvalidSchedule as exc:
        new.next_schedule_time = None
        ready(False, exc.reason, exc.message)
        return SchedulePass(new, prune=tuple(prune), error=exc)
    if spec.suspend:
        new.next_schedule_time = None
        ready(True, "Suspended", "suspended: no new runs until resumed")
        return SchedulePass(new, prune=tuple(prune))

    last = parse_time(status.last_schedule_time) or created
    due = due_tick(spec, last, now)
    fire: datetime | None = None
    cancel: tuple[str, ...] = ()
    skipped: str | None = None
    if due.missed > MISSED_LIMIT:
        events.append(
            (
                "TooManyMissedTimes",
                f"more than {MISSED_LIMIT} ticks were missed (operator down or schedule "
                f"suspended); only the latest, {rfc3339(due.tick)}, is considered"
                if due.tick
                else "",
                True,
            )
        )
    if due.tick is not None:
        new.last_schedule_time = rfc3339(due.tick)
        if active and spec.concurrency_policy == "Forbid":
            skipped = (
                f"skipped the tick at {rfc3339(due.tick)}: concurrencyPolicy Forbid and "
                f"{', '.join(active)} still running"
            )
            events.append(("SkippedTick", skipped, False))
        else:
            if active and spec.concurrency_policy == "Replace":
                cancel = tuple(active)
            fire = due.tick
            started = run_name(name, due.tick)
            new.active = sorted({*active, started})
    cron, zone = parse_cron(spec.schedule), time_zone(spec.time_zone)
    upcoming = next_tick(cron, zone, now)
    new.next_schedule_time = rfc3339(upcoming) if upcoming else None
    ready(
        True,
        "Scheduled",
        f"runs {target_text(spec)} of {spec.flow} on '{spec.schedule}' ({spec.time_zone or 'UTC'})",
    )
    return SchedulePass(
        new,
        fire=fire,
        cancel=cancel,
        skipped=skipped,
        missed=due.missed,
        prune=tuple(prune),
        next_tick=upcoming,
        events=events,
    )


def build_scheduled_run(
    schedule: dict[str, Any], spec: FlowScheduleSpec, tick: datetime
) -> dict[str, Any]:
    """The FlowInvocation of one tick: owned by the schedule (deleted with it), labelled
    with it, resolved by the operator like any invocation — the route as it stands now."""
    meta = schedule["metadata"]
    body: dict[str, Any] = {
        "apiVersion": GROUP_VERSION,
        "kind": "FlowInvocation",
        "metadata": {
            "name": run_name(meta["name"], tick),
            "labels": {LABEL_FLOW: spec.flow, LABEL_SCHEDULE: meta["name"]},
            "annotations": {ANNOTATION_SCHEDULED_AT: rfc3339(tick)},
            "ownerReferences": [
                {
                    "apiVersion": GROUP_VERSION,
                    "kind": "FlowSchedule",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": {"flow": spec.flow, "inputs": dict(spec.inputs)},
    }
    if spec.tag:
        body["spec"]["tag"] = spec.tag
    if spec.version:
        body["spec"]["version"] = spec.version
    return body


POLICIES = ("Allow", "Forbid", "Replace")
_zone = time_zone  # build_schedule's parameter of that name shadows it
HISTORY_LIMIT_MAX = 1000


def build_schedule(
    name: str,
    flow: str,
    cron: str,
    *,
    time_zone: str | None = None,
    tag: str | None = None,
    version: int | None = None,
    inputs: Mapping[str, Any] | None = None,
    concurrency_policy: str = "Allow",
    starting_deadline_seconds: int | None = None,
    successful_runs_history_limit: int = 3,
    failed_runs_history_limit: int = 1,
    suspend: bool = False,
) -> dict[str, Any]:
    """A FlowSchedule manifest, every field checked first (InvalidName, InvalidSchedule
    with a reason): the same rules the CRD and the operator apply, said the same way."""
    validate_schedule_name(name)
    validate_flow(flow)
    if tag is not None and version is not None:
        raise InvalidSchedule(
            f"invoke flow '{flow}' with either a tag ({tag}) or a version ({version}), not both",
            reason="ConflictingSelectors",
        )
    if tag is not None:
        validate_tag(tag)
    if version is not None:
        validate_version(version)
    parse_cron(cron)
    _zone(time_zone)
    if concurrency_policy not in POLICIES:
        raise InvalidSchedule(
            f"unknown concurrency policy {shown(concurrency_policy)}: use Allow (start "
            "beside unfinished runs), Forbid (skip the tick) or Replace (cancel them first)",
            reason="InvalidConcurrencyPolicy",
        )
    if starting_deadline_seconds is not None and (
        isinstance(starting_deadline_seconds, bool)
        or not isinstance(starting_deadline_seconds, int)
        or starting_deadline_seconds < 1
    ):
        raise InvalidSchedule(
            f"invalid starting deadline {shown(starting_deadline_seconds)}: a whole number "
            "of seconds >= 1, or unset to always run the latest missed tick",
            reason="InvalidStartingDeadline",
        )
    for what, limit in (
        ("successful", successful_runs_history_limit),
        ("failed", failed_runs_history_limit),
    ):
        if isinstance(limit, bool) or not isinstance(limit, int):
            limit = -1
        if not 0 <= limit <= HISTORY_LIMIT_MAX:
            raise InvalidSchedule(
                f"invalid {what} runs history limit {shown(limit)}: a whole number from 0 "
                f"to {HISTORY_LIMIT_MAX}",
                reason="InvalidHistoryLimit",
            )
    spec = FlowScheduleSpec.model_validate(
        {
            "schedule": cron,
            "timeZone": time_zone or None,
            "flow": flow,
            "tag": tag,
            "version": version,
            "inputs": dict(inputs or {}),
            "concurrencyPolicy": concurrency_policy,
            "startingDeadlineSeconds": starting_deadline_seconds,
            "successfulRunsHistoryLimit": successful_runs_history_limit,
            "failedRunsHistoryLimit": failed_runs_history_limit,
            "suspend": suspend,
        }
    )
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "FlowSchedule",
        "metadata": {"name": name, "labels": {LABEL_FLOW: flow}},
        "spec": spec.wire(),
    }
