"""Invocation status, derived whole from what is observable.

The operator observes the invocation, its Job and the Job's pods, and this module
turns them into a `FlowInvocationStatus`. Nothing here remembers anything the
objects do not show, so a restarted operator derives the same status again.
A finished status (Completed, Failed, Cancelled) is frozen: later observations
never change it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kitaru.core.conditions import rfc3339, set_condition
from kitaru.core.job_control import LABEL_ATTEMPT, pod_outcome
from kitaru.core.models import (
    Condition,
    ConditionStatus,
    FlowInvocationSpec,
    FlowInvocationStatus,
    Phase,
    ResolvedChain,
)
from kitaru.core.payloads import json_problem
from kitaru.core.routing import split_reason

RESOLVED = "Resolved"
SUCCEEDED = "Succeeded"

# Container waiting reasons that mean the image will never start on its own. Transient
# ones the kubelet retries (ErrImagePull, CreateContainerConfigError) are not here.
NOT_RUNNABLE_WAITING_REASONS = frozenset(
    {"ImageNotMapped", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
# Runner error types that are outcomes of their own rather than the flow raising.
RUNNER_REASONS = frozenset(
    {
        "ResultTooLarge",
        "ResultNotSerializable",
        "SourceMismatch",
        "InvalidInputs",
        "EntrypointNotFound",
    }
)


@dataclass(frozen=True)
class Failure:
    """Why an invocation cannot run at all (resolution error, invalid inputs, ...)."""

    reason: str
    message: str


@dataclass(frozen=True)
class Waiting:
    """Not resolvable *yet*: something the invocation names is still converging (a new
    flow's `default` route, an object the operator has not seen yet). Retried until the
    invocation's resolve deadline, then a `Failure`."""

    message: str


@dataclass(frozen=True)
class Queued:
    """Resolvable, but over a concurrency limit: waits in its flow's queue, no Job yet
    (`kitaru.core.queueing`)."""

    position: int
    message: str
    revision: int  # what orders it among runs created in the same second


@dataclass(frozen=True)
class JobSummary:
    name: str
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    start_time: str | None = None
    completion_time: str | None = None
    complete: bool = False
    failed_reason: str | None = None
    failed_message: str | None = None


@dataclass(frozen=True)
class PodSummary:
    name: str
    created: str
    phase: str
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    termination_message: str | None = None
    waiting_reason: str | None = None
    waiting_message: str | None = None
    ready: bool = False
    deleting: bool = False
    attempt: int = 0  # which attempt of its Job (pods the operator creates carry it)
    job_uid: str | None = None  # the Job whose selector it carries (None: not adopted yet)


@dataclass(frozen=True)
class RunnerOutcome:
    ok: bool
    result: Any = None
    type: str | None = None
    message: str | None = None


def summarize_job(job: Mapping[str, Any]) -> JobSummary:
    status = job.get("status") or {}
    complete = False
    failed_reason = failed_message = None
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            complete = True
        elif condition.get("type") == "Failed":
            failed_reason = condition.get("reason") or "Failed"
            failed_message = condition.get("message") or ""
    return JobSummary(
        name=job["metadata"]["name"],
        active=status.get("active") or 0,
        succeeded=status.get("succeeded") or 0,
        failed=status.get("failed") or 0,
        start_time=status.get("startTime"),
        completion_time=status.get("completionTime"),
        complete=complete,
        failed_reason=failed_reason,
        failed_message=failed_message,
    )


def summarize_pod(pod: Mapping[str, Any]) -> PodSummary:
    meta = pod["metadata"]
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    state = (statuses[0].get("state") or {}) if statuses else {}
    terminated = state.get("terminated") or {}
    waiting = state.get("waiting") or {}
    labels = meta.get("labels") or {}
    attempt = labels.get(LABEL_ATTEMPT, "0")
    return PodSummary(
        name=meta["name"],
        created=meta.get("creationTimestamp") or "",
        phase=status.get("phase") or "Pending",
        started_at=(state.get("running") or {}).get("startedAt") or terminated.get("startedAt"),
        finished_at=terminated.get("finishedAt"),
        exit_code=terminated.get("exitCode"),
        termination_message=terminated.get("message"),
        waiting_reason=waiting.get("reason"),
        waiting_message=waiting.get("message"),
        ready=any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        ),
        deleting=bool(meta.get("deletionTimestamp")),
        attempt=int(attempt) if str(attempt).isdigit() else 0,
        job_uid=labels.get("batch.kubernetes.io/controller-uid"),
    )


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def parse_termination_message(message: str | None) -> RunnerOutcome | None:
    """The runner's JSON outcome, or None when the pod left no parseable one. The pod's
    code wrote the message, so it may be anything: a result the status could not hold
    (NaN, or nested beyond what every reader decodes) counts as none."""
    if not message:
        return None
    try:
        payload = json.loads(message, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("ok"), bool):
        return None
    if payload["ok"]:
        result = payload.get("result")
        return None if json_problem(result) else RunnerOutcome(ok=True, result=result)
    return RunnerOutcome(
        ok=False, type=str(payload.get("type") or "Error"), message=str(payload.get("message", ""))
    )


def _ended(pods: Sequence[PodSummary], outcome: str) -> PodSummary | None:
    """The latest pod whose run ended so ("succeeded", "failed"). A run is one pod at a
    time, so a pod's end is the attempt's: the kubelet reports the container's exit (and
    the result in its termination message) a relist, about a second, before it marks the
    pod Succeeded or Failed (`job_control.pod_outcome`)."""
    done = [p for p in pods if pod_outcome(p.phase, p.exit_code) == outcome]
    return max(done, key=lambda p: (p.created, p.name)) if done else None


def _runner_failure(pods: Sequence[PodSummary]) -> RunnerOutcome | None:
    pod = _ended(pods, "failed")
    outcome = parse_termination_message(pod.termination_message) if pod else None
    return outcome if outcome and not outcome.ok else None


def _not_runnable(pods: Sequence[PodSummary]) -> PodSummary | None:
    return next((p for p in pods if p.waiting_reason in NOT_RUNNABLE_WAITING_REASONS), None)


@dataclass(frozen=True)
class _Verdict:
    phase: Phase
    succeeded: ConditionStatus
    reason: str
    message: str
    result: Any = None


def _verdict(
    spec: FlowInvocationSpec,
    previous: FlowInvocationStatus,
    job: JobSummary | None,
    pods: Sequence[PodSummary],
) -> _Verdict:
    pod = _ended(pods, "succeeded")
    if job is not None and (job.complete or pod is not None):
        outcome = parse_termination_message(pod.termination_message) if pod else None
        if outcome and outcome.ok:
            return _Verdict(Phase.COMPLETED, ConditionStatus.TRUE, "Completed", "", outcome.result)
        return _Verdict(
            Phase.COMPLETED, ConditionStatus.TRUE, "Completed", "the run left no result"
        )
    if job is not None and job.failed_reason:
        runner = _runner_failure(pods)
        if job.failed_reason == "DeadlineExceeded":
            return _Verdict(
                Phase.FAILED,
                ConditionStatus.FALSE,
                "DeadlineExceeded",
                job.failed_message or "the run exceeded its deadline",
            )
        if runner:
            reason = runner.type if runner.type in RUNNER_REASONS else "FlowFailed"
            return _Verdict(
                Phase.FAILED, ConditionStatus.FALSE, str(reason), f"{runner.type}: {runner.message}"
            )
        return _Verdict(
            Phase.FAILED, ConditionStatus.FALSE, job.failed_reason, job.failed_message or ""
        )
    if spec.cancel_requested:
        return _Verdict(Phase.CANCELLED, ConditionStatus.FALSE, "Cancelled", "cancelled on request")
    if job is None and previous.job_name:
        return _Verdict(
            Phase.FAILED,
            ConditionStatus.FALSE,
            "JobDeleted",
            f"job {previous.job_name} was deleted before the run finished",
        )
    stuck = _not_runnable(pods)
    if stuck:
        return _Verdict(
            Phase.FAILED,
            ConditionStatus.FALSE,
            "ImageNotRunnable",
            f"{stuck.waiting_reason}: {stuck.waiting_message or 'the image cannot run'}",
        )
    if any(p.phase == "Running" for p in pods):
        return _Verdict(Phase.RUNNING, ConditionStatus.UNKNOWN, "Running", "")
    return _Verdict(Phase.PENDING, ConditionStatus.UNKNOWN, "Pending", "")


def _status(
    conditions: list[Condition],
    phase: Phase | None,
    generation: int | None,
    *,
    resolved: ResolvedChain | None = None,
    job_name: str | None = None,
    attempts: int = 0,
    start_time: str | None = None,
    completion_time: str | None = None,
    result: Any = None,
    reason: str | None = None,
    message: str | None = None,
) -> FlowInvocationStatus:
    return FlowInvocationStatus(
        conditions=conditions,
        phase=phase,
        resolved=resolved,
        job_name=job_name,
        attempts=attempts,
        start_time=start_time,
        completion_time=completion_time,
        result=result,
        reason=reason,
        message=message,
        observed_generation=generation,
    )


def _as_str(now: datetime | str) -> str:
    return now if isinstance(now, str) else rfc3339(now)


@dataclass(frozen=True)
class _Pass:
    """What every condition written in one derivation shares."""

    previous: FlowInvocationStatus
    timestamp: str
    generation: int | None

    def conditions(self, *updates: tuple[str, ConditionStatus, str, str]) -> list[Condition]:
        """The previous conditions with each (type, status, reason, message) set."""
        conditions = self.previous.conditions
        for type_, status, reason, message in updates:
            conditions = set_condition(
                conditions, type_, status, reason, message, self.timestamp, self.generation
            )
        return conditions


def derive_invocation_status(
    spec: FlowInvocationSpec,
    previous_status: FlowInvocationStatus | None,
    resolution_or_error: ResolvedChain | Failure | Waiting | Queued | None,
    job_summary: JobSummary | None,
    pod_summaries: Sequence[PodSummary],
    now: datetime | str,
    generation: int | None = None,
) -> FlowInvocationStatus:
    """The whole status of an invocation (see the module docstring).

    `resolution_or_error` is None only while nothing was resolved yet; with a
    cancel request that ends the invocation Cancelled without a run.
    """
    previous = previous_status or _status([], None, None)
    if previous.phase is not None and previous.phase.finished:
        return previous
    at = _Pass(previous, _as_str(now), generation)
    if resolution_or_error is None:
        return _before_resolution(spec, at)
    if isinstance(resolution_or_error, Waiting):
        return _waiting(resolution_or_error, at)
    if isinstance(resolution_or_error, Queued):
        return _queued(resolution_or_error, at)
    if isinstance(resolution_or_error, Failure):
        return _unresolvable(resolution_or_error, at)
    return _resolved(spec, resolution_or_error, job_summary, pod_summaries, at)


def _before_resolution(spec: FlowInvocationSpec, at: _Pass) -> FlowInvocationStatus:
    """Nothing resolved yet: Pending, or Cancelled without a run."""
    if not spec.cancel_requested:
        conditions = at.conditions((SUCCEEDED, ConditionStatus.UNKNOWN, "Pending", ""))
        return _status(conditions, Phase.PENDING, at.generation)
    message = "cancelled before it ran"
    conditions = at.conditions((SUCCEEDED, ConditionStatus.FALSE, "Cancelled", message))
    return _status(
        conditions,
        Phase.CANCELLED,
        at.generation,
        completion_time=at.timestamp,
        reason="Cancelled",
        message=message,
    )


def _waiting(waiting: Waiting, at: _Pass) -> FlowInvocationStatus:
    conditions = at.conditions(
        (RESOLVED, ConditionStatus.FALSE, "Waiting", waiting.message),
        (SUCCEEDED, ConditionStatus.UNKNOWN, "Pending", ""),
    )
    return _status(conditions, Phase.PENDING, at.generation, message=waiting.message)


def _queued(queued: Queued, at: _Pass) -> FlowInvocationStatus:
    conditions = at.conditions((SUCCEEDED, ConditionStatus.UNKNOWN, "Queued", queued.message))
    status = _status(conditions, Phase.QUEUED, at.generation, message=queued.message)
    status.queue_position = queued.position
    status.queue_revision = queued.revision
    return status


def _unresolvable(failure: Failure, at: _Pass) -> FlowInvocationStatus:
    conditions = at.conditions(
        (RESOLVED, ConditionStatus.FALSE, failure.reason, failure.message),
        (SUCCEEDED, ConditionStatus.FALSE, failure.reason, failure.message),
    )
    return _status(
        conditions,
        Phase.FAILED,
        at.generation,
        completion_time=at.timestamp,
        reason=failure.reason,
        message=failure.message,
    )


def _resolved(
    spec: FlowInvocationSpec,
    chain: ResolvedChain,
    job: JobSummary | None,
    pods: Sequence[PodSummary],
    at: _Pass,
) -> FlowInvocationStatus:
    """Resolved: the run's verdict from its Job and pods."""
    selector = chain.tag if chain.tag else f"version {chain.version}"
    if chain.split is not None:
        selector += f" ({split_reason(chain.split)})"
    verdict = _verdict(spec, at.previous, job, pods)
    conditions = at.conditions(
        (
            RESOLVED,
            ConditionStatus.TRUE,
            "Resolved",
            f"{selector} -> {chain.deployment} ({chain.image})",
        ),
        (SUCCEEDED, verdict.succeeded, verdict.reason, verdict.message),
    )
    finished = verdict.phase.finished
    return _status(
        conditions,
        verdict.phase,
        at.generation,
        resolved=chain,
        job_name=job.name if job else at.previous.job_name,
        attempts=_attempts(at.previous, job, pods),
        start_time=_start_time(at.previous, job, pods),
        completion_time=_completion_time(job, at.timestamp) if finished else None,
        result=verdict.result,
        reason=verdict.reason if finished else None,
        message=verdict.message or None,
    )


def _attempts(
    previous: FlowInvocationStatus, job: JobSummary | None, pods: Sequence[PodSummary]
) -> int:
    """The most attempts any observation shows: pods, the Job's counters, the last status."""
    job_counts = job.active + job.succeeded + job.failed if job else 0
    return max(len(pods), job_counts, previous.attempts)


def _start_time(
    previous: FlowInvocationStatus, job: JobSummary | None, pods: Sequence[PodSummary]
) -> str | None:
    """Set once: the Job's start, else the first pod's."""
    start_time = previous.start_time or (job.start_time if job else None)
    if start_time is None:
        started = sorted(p.started_at for p in pods if p.started_at)
        start_time = started[0] if started else None
    return start_time


def _completion_time(job: JobSummary | None, timestamp: str) -> str:
    """The Job's own completion time when it completed, else when this pass saw the end."""
    return (job.completion_time if job and job.complete else None) or timestamp


def needs_job_deleted(status: FlowInvocationStatus, job: JobSummary | None) -> bool:
    """A finished invocation whose Job still runs pods (cancelled, image not runnable);
    a completed run's Job completes by itself."""
    return bool(
        job is not None
        and status.phase is not None
        and status.phase.finished
        and status.phase is not Phase.COMPLETED
        and not job.complete
        and not job.failed_reason
    )
