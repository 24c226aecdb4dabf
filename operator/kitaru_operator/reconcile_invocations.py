"""The level-based reconcile of one FlowInvocation.

Everything is derived from the invocation, its Job and the Job's pods, so a pass
after a crash at any point converges:

- no status and no Job: resolve, create the Job (named after the invocation;
  409 means a previous pass created it, and its annotation gives the chain back),
  write the status;
- a Job: derive the status from it and its pods;
- finished: the status is frozen; only TTL deletion (and stopping a Job that
  still runs after a cancel) remain.

A dispatch costs two API calls: create the Job, write the status. The reconcile runs
as a coroutine on kopf's event loop (no thread-pool hop) with `AsyncKube`'s pooled
connections; a status this process wrote is used until the index delivers it, so Job
events that race the first write do not rewrite it from a stale body (a lost 409).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from kitaru.core.inputs import InvalidInputs, inputs_hash, merge_inputs, validate_inputs
from kitaru.core.invocations import (
    Failure,
    derive_invocation_status,
    needs_job_deleted,
    summarize_job,
    summarize_pod,
    ttl_remaining,
)
from kitaru.core.jobs import NotRunnable, build_chain, build_job, chain_from_job
from kitaru.core.models import (
    FlowDeploymentSpec,
    FlowInvocationSpec,
    FlowInvocationStatus,
    Phase,
    ResolvedChain,
)
from kitaru.core.names import INVOCATIONS, LABEL_INVOCATION
from kitaru.core.routing import ResolutionError, resolve

from kitaru_operator import metrics
from kitaru_operator.kube import AsyncKube
from kitaru_operator.runtime import Runtime, post_event

logger = logging.getLogger("kitaru_operator")
Body = dict[str, Any]


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _resolve(
    rt: Runtime, namespace: str, spec: FlowInvocationSpec
) -> tuple[ResolvedChain | Failure, FlowDeploymentSpec | None, dict[str, Any]]:
    """Resolve from the indexes, then merge and validate the inputs."""
    try:
        resolution = resolve(rt.indexes.lookup(namespace), spec.flow, spec.tag, spec.version)
        body = rt.indexes.deployment(namespace, spec.flow, resolution.version)
        if body is None:  # deleted between the two reads
            return Failure("VersionNotFound", f"version {resolution.version} is gone"), None, {}
        deployment = FlowDeploymentSpec.model_validate(body["spec"])
        merged = merge_inputs(deployment.inputs, spec.inputs)
        validate_inputs(merged, deployment.input_schema)
        chain = build_chain(resolution.selector, resolution.tag, deployment, inputs_hash(merged))
    except ResolutionError as exc:
        return Failure(exc.reason, exc.message), None, {}
    except InvalidInputs as exc:
        return Failure("InvalidInputs", exc.message), None, {}
    except NotRunnable as exc:
        return Failure(exc.reason, exc.message), None, {}
    return chain, deployment, merged


def _owned_by(job: Body, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in job["metadata"].get("ownerReferences") or [])


def _api(rt: Runtime) -> AsyncKube:
    assert rt.akube is not None, "the async API client is created at startup"
    return rt.akube


async def _dispatch(
    rt: Runtime, body: Body, spec: FlowInvocationSpec
) -> tuple[ResolvedChain | Failure, Body | None]:
    """Resolve and create the Job; (chain or failure, the Job if one exists now)."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    outcome, deployment, merged = _resolve(rt, namespace, spec)
    if isinstance(outcome, Failure) or deployment is None:
        return outcome, None
    manifest = build_job(name, meta["uid"], namespace, spec.flow, outcome, deployment, merged, spec)
    created = await _api(rt).create_job(namespace, manifest)
    if created is not None:
        rt.recent_jobs[(namespace, name)] = created
        logger.info("created job %s/%s", namespace, name)
        created_at = _parse_time(meta["creationTimestamp"])
        metrics.DISPATCH_SECONDS.observe(max(0.0, (datetime.now(UTC) - created_at).total_seconds()))
        return outcome, created
    existing = await _api(rt).get_job(namespace, name)  # 409: an earlier pass created it
    if existing is None:
        return outcome, None
    return chain_from_job(existing) or outcome, existing


async def _job(
    rt: Runtime, namespace: str, name: str, previous: FlowInvocationStatus | None
) -> Body | None:
    """The invocation's Job: from the index, else one this process created and the
    index has not seen yet, else (status names a Job, index lacks it) from the API."""
    key = (namespace, name)
    job = rt.indexes.job(namespace, name)
    if job is not None:
        rt.recent_jobs.pop(key, None)
        return job
    job = rt.recent_jobs.get(key)
    if job is None and previous is not None and previous.job_name:
        job = await _api(rt).get_job(namespace, name)
    return job


async def _pods(rt: Runtime, namespace: str, name: str, job: Body | None) -> list[Body]:
    """Pods from the index; from the API when the Job finished before its pods' final
    state reached the index (the two watch streams are not ordered)."""
    pods = rt.indexes.pods(namespace, name)
    if job is None:
        return pods
    summary = summarize_job(job)
    if not (summary.complete or summary.failed_reason):
        return pods
    done = summary.succeeded if summary.complete else summary.failed
    finished = [p for p in pods if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed")]
    if len(finished) >= done:
        return pods
    return await _api(rt).list_pods(namespace, f"{LABEL_INVOCATION}={name}")


def _ttl(
    rt: Runtime, namespace: str, spec: FlowInvocationSpec, status: FlowInvocationStatus
) -> int | None:
    if spec.ttl_seconds_after_finished is not None:
        return spec.ttl_seconds_after_finished
    if status.resolved is None:
        return None
    body = rt.indexes.deployment(namespace, spec.flow, status.resolved.version)
    if body is None:
        return None
    return FlowDeploymentSpec.model_validate(body["spec"]).stack.ttl_seconds_after_finished


async def _finish(
    rt: Runtime, body: Body, spec: FlowInvocationSpec, status: FlowInvocationStatus
) -> None:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    rt.recent_jobs.pop((namespace, name), None)
    job = rt.indexes.job(namespace, name)
    if needs_job_deleted(status, summarize_job(job) if job else None):
        await _api(rt).delete_job(namespace, name)
    remaining = ttl_remaining(status, _ttl(rt, namespace, spec, status), datetime.now(UTC))
    expired = remaining is not None and remaining <= 0
    if expired and await _api(rt).delete(INVOCATIONS, namespace, name):
        logger.info("invocation %s/%s deleted after its TTL", namespace, name)


def _latest(rt: Runtime, body: Body) -> Body:
    """The newest invocation body known: the index's, or our own status write that
    the index has not delivered yet (the index still holds the version it replaced)."""
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    body = rt.indexes.invocation(*key) or body
    written = rt.written.get(key)
    if written is not None:
        base, newer = written
        if body["metadata"].get("resourceVersion") == base:
            return newer
        del rt.written[key]  # the index has it (or something newer)
    return body


def forget_invocation(rt: Runtime, namespace: str, name: str) -> None:
    rt.written.pop((namespace, name), None)
    rt.recent_jobs.pop((namespace, name), None)


async def reconcile_invocation(rt: Runtime, body: Body) -> None:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    if meta.get("deletionTimestamp"):
        return
    async with rt.alocks((namespace, name)):
        started = time.perf_counter()
        try:
            await _reconcile(rt, body)
        finally:
            elapsed = time.perf_counter() - started
            metrics.RECONCILE_SECONDS.labels("FlowInvocation").observe(elapsed)


async def _reconcile(rt: Runtime, body: Body) -> None:
    # The body we were handed may be older than the index or our own last write.
    body = _latest(rt, body)
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    spec = FlowInvocationSpec.model_validate(body["spec"])
    raw_status = body.get("status")
    previous = FlowInvocationStatus.model_validate(raw_status) if raw_status else None
    if previous is not None and previous.phase is not None and previous.phase.finished:
        await _finish(rt, body, spec, previous)
        return

    job = await _job(rt, namespace, name, previous)
    if job is not None and not _owned_by(job, meta["uid"]):
        return  # a Job of an earlier invocation of this name, still being collected
    outcome: ResolvedChain | Failure | None
    if job is not None:
        outcome = chain_from_job(job) or (previous.resolved if previous else None)
    elif previous is not None and previous.resolved is not None:
        outcome = previous.resolved  # the Job is gone: derive says JobDeleted or Cancelled
    elif spec.cancel_requested:
        outcome = None
    else:
        outcome, job = await _dispatch(rt, body, spec)

    status = derive_invocation_status(
        spec,
        previous,
        outcome,
        summarize_job(job) if job else None,
        [summarize_pod(p) for p in await _pods(rt, namespace, name, job)],
        datetime.now(UTC),
        meta.get("generation"),
    )
    wire = status.wire()
    if raw_status == wire:
        return
    written = await _api(rt).replace_status(INVOCATIONS, {**body, "status": wire})
    if written is None:
        return  # a newer version exists; its event brings another pass
    rt.written[(namespace, name)] = (meta.get("resourceVersion", ""), written)
    if previous is None or previous.phase != status.phase:
        assert status.phase is not None
        metrics.INVOCATIONS.labels(status.phase.value).inc()
        detail = status.message or (f"job {status.job_name}" if status.job_name else "")
        post_event(body, status.phase.value, detail, warning=status.phase == Phase.FAILED)
    if status.phase is not None and status.phase.finished:
        await _finish(rt, written, spec, status)
