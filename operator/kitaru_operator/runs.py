"""What the operator keeps of running work: the Jobs of invocations and the pods still
running for them.

Jobs are watched with a label selector (only ours) and kept as summaries; pods only
while they run (a field selector drops them once Succeeded or Failed), so memory follows
what is in flight. A finished pod's last state (its termination message carries the
run's result) is read once, when its Job finishes (`reconcile_invocations._pods`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kitaru.core.invocations import JobSummary, PodSummary, summarize_job, summarize_pod
from kitaru.core.jobs import ANNOTATION_RESOLVED, parse_chain
from kitaru.core.models import ResolvedChain
from kitaru.core.names import LABEL_INVOCATION

from kitaru_operator.informer import Key
from kitaru_operator.objects import Observed

JOB_SELECTOR = LABEL_INVOCATION
RUNNING_POD_SELECTOR = "status.phase!=Succeeded,status.phase!=Failed"

OwnerChanged = Callable[[str, str], None]  # (namespace, invocation name)


@dataclass(frozen=True, slots=True)
class JobRecord:
    summary: JobSummary
    owners: frozenset[str]  # uids of the FlowInvocations that own it
    chain: ResolvedChain | None  # from the Job's annotation
    deleting: bool

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


def job_record(obj: Observed) -> JobRecord:
    """A Job, by name: invocations own theirs (ownerReferences decide, not the label)."""
    meta = obj.metadata
    return JobRecord(
        summarize_job({"metadata": {"name": meta.name}, "status": obj.status}),
        frozenset(ref.uid for ref in meta.owner_references if ref.kind == "FlowInvocation"),
        parse_chain(meta.annotations.get(ANNOTATION_RESOLVED)),
        meta.deletion_timestamp is not None,
    )


def pod_record(obj: Observed) -> PodRecord | None:
    meta = obj.metadata
    invocation = meta.labels.get(LABEL_INVOCATION)
    if not invocation:
        return None
    pod = {"metadata": {"name": meta.name, "creationTimestamp": meta.creation_timestamp}}
    return PodRecord(invocation, summarize_pod({**pod, "status": obj.status}))


class Jobs:
    """Sink of the Job informer: the Job of each invocation, by (namespace, name)."""

    def __init__(self, changed: OwnerChanged) -> None:
        self.records: dict[Key, JobRecord] = {}
        self.changed = changed

    def upsert(self, key: Key, record: JobRecord) -> None:
        self.records[key] = record
        self.changed(*key)

    def delete(self, key: Key, record: JobRecord | None = None) -> None:
        if self.records.pop(key, None) is not None:
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
