"""What the operator keeps of running work: the Jobs of invocations and the pods still
running for them.

Jobs are watched with a label selector (only ours) and kept as summaries plus what
running them takes (`kitaru.core.job_control`); pods only while they run (a field
selector drops them once Succeeded or Failed), so memory follows what is in flight. A
finished pod's last state (its termination message carries the run's result) is read
from the API when needed (`invocations._pods`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kitaru.core.invocations import JobSummary, PodSummary, summarize_job, summarize_pod
from kitaru.core.job_control import MANAGED_BY
from kitaru.core.jobs import ANNOTATION_RESOLVED, parse_chain
from kitaru.core.models import ResolvedChain
from kitaru.core.names import LABEL_FLOW, LABEL_INVOCATION

from kitaru_operator.informer import Key
from kitaru_operator.objects import JobObject, Observed

RUNNING_POD_SELECTOR = "status.phase!=Succeeded,status.phase!=Failed"

OwnerChanged = Callable[[str, str], None]  # (namespace, invocation name)
JobActivity = Callable[[Key, "JobRecord | None"], None]  # a Job changed, or went (None)


@dataclass(frozen=True, slots=True)
class JobRecord:
    summary: JobSummary
    owners: frozenset[str]  # uids of the FlowInvocations that own it
    chain: ResolvedChain | None  # from the Job's annotation
    deleting: bool
    # Running it ourselves (spec.managedBy, see kitaru.core.job_control):
    managed: bool
    uid: str
    resource_version: str
    backoff_limit: int
    active_deadline_seconds: int | None
    status: dict[str, Any]
    flow: str = ""  # its kitaru.dev/flow label

    @property
    def running(self) -> bool:
        """Holding a concurrency slot: not finished and not being deleted."""
        summary = self.summary
        return not (self.deleting or summary.complete or summary.failed_reason)

    def owned_by(self, uid: str) -> bool:
        return uid in self.owners

    @property
    def being_collected(self) -> bool:
        """Deleted, or owned by another invocation (an earlier one of the same name): the
        garbage collector takes it. Otherwise a Job that is not ours is someone else's."""
        return self.deleting or bool(self.owners)


@dataclass(frozen=True, slots=True)
class PodRecord:
    invocation: str
    summary: PodSummary


def job_record(obj: JobObject) -> JobRecord:
    """A Job, by name: invocations own theirs (ownerReferences decide, not the label).
    It is ours to run only if the API server kept its managedBy (JobManagedBy on)."""
    meta = obj.metadata
    return JobRecord(
        summarize_job({"metadata": {"name": meta.name}, "status": obj.status}),
        frozenset(ref.uid for ref in meta.owner_references if ref.kind == "FlowInvocation"),
        parse_chain(meta.annotations.get(ANNOTATION_RESOLVED)),
        meta.deletion_timestamp is not None,
        obj.spec.managed_by == MANAGED_BY,
        meta.uid,
        meta.resource_version,
        obj.spec.backoff_limit,
        obj.spec.active_deadline_seconds,
        obj.status,
        meta.labels.get(LABEL_FLOW, ""),
    )


def newer(a: JobRecord | None, b: JobRecord | None) -> JobRecord | None:
    """The later of two versions of a Job (resourceVersions of one object only grow)."""
    if a is None or b is None:
        return a or b
    return a if int(a.resource_version or 0) >= int(b.resource_version or 0) else b


def pod_record(obj: Observed) -> PodRecord | None:
    meta = obj.metadata
    invocation = meta.labels.get(LABEL_INVOCATION)
    if not invocation:
        return None
    pod = {
        "metadata": {
            "name": meta.name,
            "creationTimestamp": meta.creation_timestamp,
            "deletionTimestamp": meta.deletion_timestamp,
            "labels": meta.labels,
        },
        "status": obj.status,
    }
    return PodRecord(invocation, summarize_pod(pod))


class Jobs:
    """Sink of the Job informer: the Job of each invocation, by (namespace, name)."""

    def __init__(self, changed: OwnerChanged, activity: JobActivity | None = None) -> None:
        self.records: dict[Key, JobRecord] = {}
        self.changed = changed
        self.activity = activity

    def upsert(self, key: Key, record: JobRecord) -> None:
        self.records[key] = record
        if self.activity is not None:
            self.activity(key, record)
        self.changed(*key)

    def delete(self, key: Key, record: JobRecord | None = None) -> None:
        if self.records.pop(key, None) is not None:
            if self.activity is not None:
                self.activity(key, None)
            self.changed(*key)

    def keys(self, namespace: str | None) -> Iterable[Key]:
        return [k for k in self.records if namespace is None or k[0] == namespace]


class RunningPods:
    """Sink of the pod informer: pods not yet Succeeded or Failed, by invocation."""

    def __init__(self, changed: OwnerChanged) -> None:
        self.by_pod: dict[Key, PodRecord] = {}
        self.by_invocation: dict[Key, dict[str, PodSummary]] = {}
        self.changed = changed

    def of(self, namespace: str, invocation: str) -> list[PodSummary]:
        return list(self.by_invocation.get((namespace, invocation), {}).values())

    def upsert(self, key: Key, record: PodRecord) -> None:
        self._remove(key)
        self.by_pod[key] = record
        owner = (key[0], record.invocation)
        self.by_invocation.setdefault(owner, {})[key[1]] = record.summary
        self.changed(*owner)

    def delete(self, key: Key, record: PodRecord | None = None) -> None:
        removed = self._remove(key)
        if removed is not None:
            self.changed(key[0], removed.invocation)

    def _remove(self, key: Key) -> PodRecord | None:
        record = self.by_pod.pop(key, None)
        if record is not None:
            owner = (key[0], record.invocation)
            pods = self.by_invocation.get(owner, {})
            pods.pop(key[1], None)
            if not pods:
                self.by_invocation.pop(owner, None)
        return record

    def keys(self, namespace: str | None) -> Iterable[Key]:
        return [k for k in self.by_pod if namespace is None or k[0] == namespace]
