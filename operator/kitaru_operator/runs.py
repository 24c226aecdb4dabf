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
from typing import Any

from kitaru.core.invocations import JobSummary, PodSummary, summarize_job, summarize_pod
from kitaru.core.jobs import chain_from_job
from kitaru.core.models import ResolvedChain
from kitaru.core.names import LABEL_INVOCATION

from kitaru_operator.informer import Key

JOB_SELECTOR = LABEL_INVOCATION
RUNNING_POD_SELECTOR = "status.phase!=Succeeded,status.phase!=Failed"

OwnerChanged = Callable[[str, str], None]  # (namespace, invocation name)


@dataclass(frozen=True, slots=True)
class JobRecord:
    summary: JobSummary
    owners: frozenset[str]  # uids of the owner references
    chain: ResolvedChain | None  # from the Job's annotation


@dataclass(frozen=True, slots=True)
class PodRecord:
    invocation: str
    summary: PodSummary


def _invocation_label(obj: dict[str, Any]) -> str | None:
    labels = obj["metadata"].get("labels") or {}
    value = labels.get(LABEL_INVOCATION)
    return str(value) if value else None


def job_record(obj: dict[str, Any]) -> JobRecord | None:
    if _invocation_label(obj) != obj["metadata"]["name"]:
        return None  # Jobs are named after their invocation; anything else is not ours
    owners = frozenset(ref.get("uid", "") for ref in obj["metadata"].get("ownerReferences") or [])
    return JobRecord(summarize_job(obj), owners, chain_from_job(obj))


def pod_record(obj: dict[str, Any]) -> PodRecord | None:
    invocation = _invocation_label(obj)
    return PodRecord(invocation, summarize_pod(obj)) if invocation else None


class Jobs:
    """Sink of the Job informer: the Job of each invocation, by (namespace, name)."""

    def __init__(self, changed: OwnerChanged) -> None:
        self.records: dict[Key, JobRecord] = {}
        self.changed = changed

    def upsert(self, key: Key, record: JobRecord) -> None:
        self.records[key] = record
        self.changed(*key)

    def delete(self, key: Key) -> None:
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

    def delete(self, key: Key) -> None:
        record = self._remove(key)
        if record is not None:
            self.changed(key[0], record.invocation)

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
