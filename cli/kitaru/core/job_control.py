"""Running an invocation's Job ourselves: its pod and its status, as the Job API
documents them, for a Job whose `spec.managedBy` names the operator.

Why: the built-in Job controller creates a Job's pods under kube-controller-manager's
client rate limit (`--kube-api-qps`, 20 by default) and spends several calls per Job, so
invocation -> pod stalls near 9 pods/s, and nobody can raise that flag on a managed
cluster. With `managedBy` (JobManagedBy, on by default since Kubernetes 1.32) the
built-in controller leaves the Job alone; the operator creates the pod at once and keeps
the Job's status true to the API: `kubectl get jobs`, `kubectl logs job/...`, owner
references and the status fields work as for any Job.

What is implemented is what an invocation's Job uses: one pod at a time (NonIndexed,
completions 1), `backoffLimit` with the Job API's retry delay (10 s, doubling, at most
6 minutes), `activeDeadlineSeconds`, and the status transitions the API server checks
for managed Jobs: `SuccessCriteriaMet` before `Complete`, `FailureTarget` before
`Failed`, counters that never go down, no active or terminating pods once finished.
Pods have deterministic names (`<job>-<attempt>`), so a pass repeated after a crash
finds the pod it created instead of making a second one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from kitaru.core.conditions import rfc3339
from kitaru.core.names import GROUP

if TYPE_CHECKING:
    from kitaru.core.invocations import PodSummary

MANAGED_BY = f"{GROUP}/operator"
LABEL_ATTEMPT = f"{GROUP}/attempt"
RETRY_DELAY = timedelta(seconds=10)
RETRY_DELAY_MAX = timedelta(minutes=6)

COMPLETE, FAILED = "Complete", "Failed"
SUCCESS_CRITERIA_MET, FAILURE_TARGET = "SuccessCriteriaMet", "FailureTarget"
COMPLETIONS_REACHED = ("CompletionsReached", "Reached expected number of succeeded pods")
BACKOFF_LIMIT_EXCEEDED = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
DEADLINE_EXCEEDED = ("DeadlineExceeded", "Job was active longer than specified deadline")


@dataclass(frozen=True)
class PodView:
    """What running a Job needs of one of its pods."""

    name: str
    attempt: int
    outcome: str  # "active", "succeeded" or "failed"
    ready: bool = False
    deleting: bool = False
    finished_at: str | None = None  # when its container ended (RFC 3339)


@dataclass(frozen=True)
class JobControl:
    """What to do for a Job now: the attempt whose pod to create, pods to delete, the
    status to write (None: unchanged), and when another pass is due (None: on change)."""

    create_attempt: int | None = None
    delete: tuple[str, ...] = ()
    status: dict[str, Any] | None = None
    wake_after: float | None = None


def pod_outcome(phase: str, exit_code: int | None) -> str:
    """A pod's part in the Job: its one container's exit decides as soon as the kubelet
    reports it (a second before it marks the pod Succeeded or Failed)."""
    if phase == "Succeeded" or exit_code == 0:
        return "succeeded"
    if phase == "Failed" or exit_code is not None:
        return "failed"
    return "active"


def pod_view(pod: PodSummary) -> PodView:
    return PodView(
        name=pod.name,
        attempt=pod.attempt,
        outcome=pod_outcome(pod.phase, pod.exit_code),
        ready=pod.ready,
        deleting=pod.deleting,
        finished_at=pod.finished_at,
    )


def pod_name(job_name: str, attempt: int) -> str:
    return f"{job_name}-{attempt}"


def _true(status: Mapping[str, Any], kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True" for c in status.get("conditions") or []
    )


def _with_conditions(
    status: Mapping[str, Any], now: str, *added: tuple[str, tuple[str, str]]
) -> list[dict[str, Any]]:
    conditions = [dict(c) for c in status.get("conditions") or []]
    for kind, (reason, message) in added:
        if not any(c.get("type") == kind for c in conditions):
            conditions.append(
                {
                    "type": kind,
                    "status": "True",
                    "reason": reason,
                    "message": message,
                    "lastProbeTime": now,
                    "lastTransitionTime": now,
                }
            )
    return conditions


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _retry_delay(failures: int) -> timedelta:
    return min(RETRY_DELAY * 2 ** max(0, failures - 1), RETRY_DELAY_MAX)


def control_job(
    backoff_limit: int,
    active_deadline_seconds: int | None,
    status: Mapping[str, Any],
    pods: Sequence[PodView],
    now: datetime,
) -> JobControl:
    """One pass of running a Job (see the module docstring); pure."""
    stamp = rfc3339(now)
    live = [p for p in pods if p.outcome == "active" and not p.deleting]
    terminating = [p for p in pods if p.outcome == "active" and p.deleting]
    if _true(status, COMPLETE) or _true(status, FAILED):
        return JobControl(delete=tuple(p.name for p in live))

    succeeded = max(int(status.get("succeeded") or 0), sum(p.outcome == "succeeded" for p in pods))
    failed = max(int(status.get("failed") or 0), sum(p.outcome == "failed" for p in pods))
    # A Job starts with its first pod (made here, or beside the Job at its creation).
    start = status.get("startTime") or (stamp if pods else None)
    wanted: dict[str, Any] = {
        "startTime": start,
        "active": len(live),
        "ready": sum(p.ready for p in live),
        "terminating": len(terminating),
        "succeeded": succeeded,
        "failed": failed,
        "conditions": list(status.get("conditions") or []),
    }

    ending: tuple[str, tuple[str, str]] | None = None
    if succeeded:
        ending = (SUCCESS_CRITERIA_MET, COMPLETIONS_REACHED)
    elif (
        start
        and active_deadline_seconds is not None
        and now >= _parse(start) + timedelta(seconds=active_deadline_seconds)
    ):
        ending = (FAILURE_TARGET, DEADLINE_EXCEEDED)
    elif failed > backoff_limit:
        ending = (FAILURE_TARGET, BACKOFF_LIMIT_EXCEEDED)
    if ending is not None:
        kind, why = ending
        final = COMPLETE if kind == SUCCESS_CRITERIA_MET else FAILED
        stopping = live or terminating
        wanted["active"] = wanted["ready"] = 0
        wanted["terminating"] = len(terminating) + len(live)
        wanted["conditions"] = _with_conditions(status, stamp, ending)
        if not stopping:  # the Job ends once no pod of it runs any more
            wanted["terminating"] = 0
            wanted["conditions"] = _with_conditions(status, stamp, ending, (final, why))
            wanted["startTime"] = start or stamp
            if final == COMPLETE:
                wanted["completionTime"] = max(stamp, wanted["startTime"])
        return JobControl(
            delete=tuple(p.name for p in live),
            status=_changed(status, wanted),
            wake_after=1.0 if stopping else None,
        )

    create = None
    wake_after = None
    if not live and not terminating:
        last_end = max((p.finished_at for p in pods if p.finished_at), default=None)
        ready_at = _parse(last_end) + _retry_delay(failed) if failed and last_end else now
        if now >= ready_at:
            create = max((p.attempt for p in pods), default=-1) + 1
            wanted["active"] = 1
            wanted["startTime"] = start or stamp
        else:
            wake_after = (ready_at - now).total_seconds()
    if active_deadline_seconds is not None and wanted["startTime"]:
        left = (
            _parse(wanted["startTime"]) + timedelta(seconds=active_deadline_seconds) - now
        ).total_seconds()
        wake_after = min(filter(None, (wake_after, max(left, 0.1))))
    return JobControl(create_attempt=create, status=_changed(status, wanted), wake_after=wake_after)


def _changed(status: Mapping[str, Any], wanted: dict[str, Any]) -> dict[str, Any] | None:
    """The status to write (None when it says what the Job's already does); absent
    optional fields stay absent."""
    merged = {**status, **{k: v for k, v in wanted.items() if v is not None}}
    for key in ("ready", "terminating"):
        if merged.get(key) == 0 and key not in status:
            del merged[key]
    if not merged.get("conditions"):
        merged.pop("conditions", None)
    return None if merged == dict(status) else merged


def _job_owner(job: Mapping[str, Any]) -> dict[str, Any]:
    meta = job["metadata"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def job_pod_labels(job: Mapping[str, Any]) -> dict[str, str]:
    """The labels the API server gives a Job's template (its generated selector and
    name): what `kubectl logs job/...` and `kubectl get pods -l job-name=...` find."""
    meta = job["metadata"]
    return {
        "batch.kubernetes.io/controller-uid": meta["uid"],
        "batch.kubernetes.io/job-name": meta["name"],
        "controller-uid": meta["uid"],
        "job-name": meta["name"],
    }


def build_pod(
    job: Mapping[str, Any], attempt: int, owner: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The pod of one attempt of a Job, from the Job's template, owned by the Job (as
    the API server returned it) or, for the first attempt made beside a Job being
    created, by `owner` until the Job adopts it (`adoption_patch`)."""
    meta = job["metadata"]
    template = job["spec"]["template"]
    labels = {**(template.get("metadata") or {}).get("labels", {}), LABEL_ATTEMPT: str(attempt)}
    pod_meta: dict[str, Any] = {
        "name": pod_name(meta["name"], attempt),
        "namespace": meta["namespace"],
        "labels": labels,
        "ownerReferences": [dict(owner) if owner is not None else _job_owner(job)],
    }
    annotations = (template.get("metadata") or {}).get("annotations")
    if annotations:
        pod_meta["annotations"] = dict(annotations)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": template["spec"]}


def adoption_patch(job: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch that gives a pod made before its Job (the first attempt) to the
    Job: the Job's selector labels, and the Job as its only owner, so that deleting the
    Job (a cancel) takes the pod with it."""
    return {"metadata": {"labels": job_pod_labels(job), "ownerReferences": [_job_owner(job)]}}
