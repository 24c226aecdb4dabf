"""The level-based reconcile of one running FlowInvocation.

Everything is derived from the invocation, its Job and the Job's pods, so a pass
after a crash at any point converges:

- no status and no Job: resolve (from memory), create the Job (named after the
  invocation; 409 means a previous pass created it, and its annotation gives the chain
  back), write the status;
- a Job: derive the status from it and its pods;
- finished: the status is written once and frozen; a Job still running then (a cancel)
  is deleted first. The invocation then leaves the operator's watch (field selector) and
  only retention (`retention`) looks at it again.

A dispatch costs two API calls: create the Job, write the status. A status this process
wrote is used until the watch delivers it, so Job events that race the first write do
not rewrite it from a stale body (a lost 409).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from kitaru.core.conditions import rfc3339
from kitaru.core.inputs import InvalidInputs, inputs_hash, merge_inputs
from kitaru.core.invocations import (
    Failure,
    PodSummary,
    Queued,
    Waiting,
    derive_invocation_status,
    needs_job_deleted,
    summarize_pod,
)
from kitaru.core.job_control import adoption_patch, build_pod, control_job, pod_view
from kitaru.core.jobs import NotRunnable, build_chain, build_job
from kitaru.core.models import (
    FlowDeploymentSpec,
    FlowInvocationSpec,
    FlowInvocationStatus,
    Phase,
    ResolvedChain,
    ShadowRef,
)
from kitaru.core.names import LABEL_INVOCATION, deployment_name, route_name
from kitaru.core.routing import (
    NoDefaultRoute,
    NoDeployments,
    Resolution,
    ResolutionError,
    TagNotFound,
    VersionNotFound,
    resolve,
)
from kitaru.core.shadow import build_shadow_invocation, mirrors, shadow_name

from kitaru_operator import metrics
from kitaru_operator.concurrency import queue_order
from kitaru_operator.events import ObjectRef
from kitaru_operator.flows import FlowLookup
from kitaru_operator.kube import DEPLOYMENT, INVOCATION, JOB, POD, ROUTE, ApiError
from kitaru_operator.objects import JobObject
from kitaru_operator.runs import JobRecord, job_record, newer
from kitaru_operator.runtime import Runtime

logger = logging.getLogger("kitaru_operator")
Body = dict[str, Any]
RETRY_MIN_SECONDS, RETRY_MAX_SECONDS = 0.5, 8.0
POD_RETRY_SECONDS = 10.0  # after the API server refused a pod (quota, policy)
# The operator watches invocations until they finish (a field selector on the server).
RUNNING_SELECTOR = ",".join(f"status.phase!={p.value}" for p in Phase if p.finished)


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _ref(body: Body) -> ObjectRef:
    meta = body["metadata"]
    return ObjectRef(
        INVOCATION.api_version, INVOCATION.kind, meta["namespace"], meta["name"], meta["uid"]
    )


async def _still_converging(rt: Runtime, namespace: str, error: ResolutionError) -> bool:
    """Whether a resolution failure against memory may be "not yet": a new flow's
    `default` route (the operator creates it), or what the selector names exists in the
    API server and the watch has not delivered it yet (one read, on this path only)."""
    if isinstance(error, NoDefaultRoute):
        return True
    if isinstance(error, NoDeployments):
        return await rt.api.any_item(
            DEPLOYMENT, namespace, field_selector=f"spec.flow={error.flow}"
        )
    if isinstance(error, TagNotFound) and error.tag is not None:
        return await rt.api.get(ROUTE, namespace, route_name(error.flow, error.tag)) is not None
    if isinstance(error, VersionNotFound) and error.version is not None:
        name = deployment_name(error.flow, error.version)
        return await rt.api.get(DEPLOYMENT, namespace, name) is not None
    return False


def _resolve_deadline(rt: Runtime, body: Body, spec: FlowInvocationSpec) -> datetime:
    seconds: float = rt.resolve_deadline_seconds
    if spec.resolve_deadline_seconds is not None:
        seconds = spec.resolve_deadline_seconds
    return _parse_time(body["metadata"]["creationTimestamp"]) + timedelta(seconds=seconds)


async def _resolve(
    rt: Runtime, body: Body, spec: FlowInvocationSpec
) -> tuple[ResolvedChain | Failure | Waiting, FlowDeploymentSpec | None, dict[str, Any]]:
    """Resolve from memory, then merge and validate the inputs. A failure that may be
    "not yet" is `Waiting` until the invocation's resolve deadline."""
    namespace = body["metadata"]["namespace"]
    try:
        resolution = resolve(
            FlowLookup(rt.flows, namespace),
            spec.flow,
            spec.tag,
            spec.version,
            routing_key=spec.routing_key,
            invocation=body["metadata"]["name"],
        )
        state = rt.flows.state(namespace, spec.flow)
        record = state.deployments.get(resolution.version) if state else None
        if record is None:  # deleted between the two reads
            return Failure("VersionNotFound", f"version {resolution.version} is gone"), None, {}
        deployment = record.spec()
        merged = merge_inputs(deployment.inputs, spec.inputs)
        await rt.input_checker.check(merged, deployment.input_schema)
        chain = build_chain(
            resolution.selector,
            resolution.tag,
            deployment,
            inputs_hash(merged),
            resolution.split,
            default_image=rt.default_runner_image,
        )
        chain.shadow = _shadow_of_run(rt, namespace, body["metadata"]["name"], spec, resolution)
    except ResolutionError as exc:
        deadline = _resolve_deadline(rt, body, spec)
        if datetime.now(UTC) < deadline and await _still_converging(rt, namespace, exc):
            until = rfc3339(deadline)
            return Waiting(f"not resolvable yet, retrying until {until}: {exc.message}"), None, {}
        return Failure(exc.reason, exc.message), None, {}
    except InvalidInputs as exc:
        return Failure("InvalidInputs", exc.message), None, {}
    except NotRunnable as exc:
        return Failure(exc.reason, exc.message), None, {}
    except Exception as exc:  # what the rules did not foresaw: this run fails, and says so
        metrics.RECONCILE_ERRORS.labels("FlowInvocation").inc()
        logger.exception("resolving invocation %s/%s failed", namespace, body["metadata"]["name"])
        return (
            Failure("ResolutionFailed", f"the run could not be resolved: {exc!r}"[:500]),
            None,
            {},
        )
    return chain, deployment, merged


def _shadow_of_run(
    rt: Runtime, namespace: str, name: str, spec: FlowInvocationSpec, resolution: Resolution
) -> ShadowRef | None:
    """The shadow run this invocation gets: when the route it resolved through mirrors
    to a candidate that exists, and its name falls in the mirrored fraction."""
    if resolution.tag is None or spec.shadow_of is not None:
        return None
    shadow = FlowLookup(rt.flows, namespace).shadow(spec.flow, resolution.tag)
    if shadow is None or not mirrors(spec.flow, name, shadow[1]):
        return None
    return ShadowRef(name=shadow_name(name), version=shadow[0])


async def _start_shadow(
    rt: Runtime,
    body: Body,
    spec: FlowInvocationSpec,
    shadow: ShadowRef | None,
    inputs: dict[str, Any],
) -> None:
    """Create the shadow run, if any. Never the primary's problem: a refusal, or its name
    taken by an invocation that is not this one's shadow, is an Event."""
    if shadow is None:
        return
    meta = body["metadata"]
    manifest = build_shadow_invocation(body, spec, shadow.version, inputs)
    try:
        if await rt.api.create(INVOCATION, meta["namespace"], manifest) is not None:
            return
        existing = await rt.api.get(INVOCATION, meta["namespace"], shadow.name)
    except ApiError as exc:
        rt.events.post(
            _ref(body), "ShadowNotStarted", f"shadow run {shadow.name}: {exc}", warning=True
        )
        return
    if existing is not None and (existing.get("spec") or {}).get("shadowOf") != meta["name"]:
        rt.events.post(
            _ref(body),
            "ShadowNotStarted",
            f"shadow run {shadow.name}: an invocation of that name exists and is not the "
            f"shadow of {meta['name']}; it is left alone and not compared",
            warning=True,
        )


def _not_ours(job: JobRecord, name: str) -> Waiting | Failure:
    """A Job of the invocation's name that it does not own: wait while the garbage
    collector takes an earlier invocation's; anything else is someone else's."""
    if job.being_collected:
        return Waiting(f"job {name} of an earlier invocation of this name is being deleted")
    return Failure(
        "JobNameTaken",
        f"a Job named {name} exists and does not belong to this invocation; delete it "
        f"(kubectl delete job {name}) or invoke under another name",
    )


async def _dispatch(
    rt: Runtime, body: Body, spec: FlowInvocationSpec, previous: FlowInvocationStatus | None
) -> tuple[ResolvedChain | Failure | Waiting | Queued, JobRecord | None, PodSummary | None]:
    """Resolve, pass the concurrency gate, create the Job and its first pod; (outcome,
    the Job if one of ours exists now, the pod made in this pass)."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    outcome, deployment, merged = await _resolve(rt, body, spec)
    if not isinstance(outcome, ResolvedChain) or deployment is None:
        return outcome, None, None
    position = previous.queue_position if previous else None
    queued = rt.gate.admit(namespace, name, queue_order(body), spec.flow, outcome.tag, position)
    if queued is not None:
        return queued, None, None
    manifest = build_job(name, meta["uid"], namespace, spec.flow, outcome, deployment, merged, spec)
    # The first attempt's pod is made beside the Job, not after it: a user waits for the
    # pod, and the Job's create would be one more round trip before it. Until the Job
    # adopts it, the invocation owns it.
    owner = {
        "apiVersion": INVOCATION.api_version,
        "kind": INVOCATION.kind,
        "name": name,
        "uid": meta["uid"],
        "controller": False,
    }
    # The shadow run (if any) in the same breath: a crash after the Job but before it
    # would otherwise lose it, since a Job that exists is never dispatched again.
    created, early_pod, _ = await asyncio.gather(
        rt.api.create(JOB, namespace, manifest),
        _create_pod(rt, build_pod(manifest, 0, owner=owner)),
        _start_shadow(rt, body, spec, outcome.shadow, merged),
    )
    record: JobRecord | None
    if created is not None:
        record = job_record(JobObject.model_validate(created))
        rt.recent_jobs[(namespace, name)] = record
        rt.job_bodies[(namespace, name)] = created
        logger.info("created job %s/%s", namespace, name)
        created_at = _parse_time(meta["creationTimestamp"])
        metrics.DISPATCH_SECONDS.observe(max(0.0, (datetime.now(UTC) - created_at).total_seconds()))
    else:
        existing = await rt.api.get(JOB, namespace, name)  # 409: an earlier pass made it?
        record = job_record(JobObject.model_validate(existing)) if existing is not None else None
    if record is None or not record.owned_by(meta["uid"]) or not record.managed:
        # Not ours to run: someone else's Job, one being replaced, or a cluster that runs
        # it with the built-in controller (JobManagedBy off). Our early pod must go.
        if early_pod is not None:
            await rt.api.delete(POD, namespace, early_pod["metadata"]["name"])
        if record is None:
            return Waiting(f"job {name} was being replaced"), None, None
        if not record.owned_by(meta["uid"]):
            return _not_ours(record, name), None, None
    elif early_pod is not None and created is not None:
        adopted = await rt.api.patch(
            POD, namespace, early_pod["metadata"]["name"], adoption_patch(created)
        )
        return outcome, record, summarize_pod(adopted or early_pod)
    return record.chain or outcome, record, None


async def _create_pod(rt: Runtime, pod: Body) -> Body | None:
    """A pod made beside its Job: None if it exists, or if the API server refuses it (a
    quota, a policy), which the Job's first pass then reports and retries."""
    try:
        return await rt.api.create(POD, pod["metadata"]["namespace"], pod)
    except ApiError as exc:
        if exc.status >= 500:
            raise
        return None


async def _job(
    rt: Runtime, namespace: str, name: str, previous: FlowInvocationStatus | None
) -> JobRecord | None:
    """The invocation's Job: the newer of the watch's and the one this process last
    wrote (or created); else, when the status names a Job the watch lacks, the API's."""
    key = (namespace, name)
    job = newer(rt.jobs.records.get(key), rt.recent_jobs.get(key))
    if job is not None and job is rt.jobs.records.get(key):
        rt.recent_jobs.pop(key, None)  # the watch has caught up
    if job is None and previous is not None and previous.job_name:
        found = await rt.api.get(JOB, namespace, name)
        job = job_record(JobObject.model_validate(found)) if found else None
    return job


async def _pods(rt: Runtime, namespace: str, name: str, job: JobRecord | None) -> list[PodSummary]:
    """The running pods from the watch; every pod from the API when those cannot tell:
    the Job finished (the final states carry the results), or it is ours to run and none
    of its pods is running (one ended, or the operator restarted)."""
    running = rt.pods.of(namespace, name)
    if job is None:
        return running
    summary = job.summary
    finished = summary.complete or summary.failed_reason
    idle = job.managed and job.status.get("startTime") and not running
    if not (finished or idle):
        return running
    listed = await rt.api.list_all(POD, namespace, label_selector=f"{LABEL_INVOCATION}={name}")
    return [summarize_pod(p) for p in listed]


async def _run_job(
    rt: Runtime, namespace: str, name: str, job: JobRecord, pods: list[PodSummary]
) -> tuple[JobRecord, list[PodSummary]]:
    """One pass of running a Job that is ours (`kitaru.core.job_control`): its pod and
    its status; the Job and pods as they are afterwards."""
    key = (namespace, name)
    orphans = [p for p in pods if p.job_uid != job.uid]
    if orphans:  # made beside the Job (or before a crash): the Job takes them over
        body = rt.job_bodies.get(key) or await rt.api.get(JOB, namespace, name)
        if body is None:
            return job, pods  # deleted meanwhile: its event brings the next pass
        for pod in orphans:
            await rt.api.patch(POD, namespace, pod.name, adoption_patch(body))
    control = control_job(
        job.backoff_limit,
        job.active_deadline_seconds,
        job.status,
        [pod_view(p) for p in pods],
        datetime.now(UTC),
    )
    for doomed in control.delete:
        await rt.api.delete(POD, namespace, doomed, propagation="Background")
    if control.create_attempt is not None:
        body = rt.job_bodies.get(key) or await rt.api.get(JOB, namespace, name)
        if body is None:
            return job, pods  # deleted meanwhile: its event brings the next pass
        try:
            created = await rt.api.create(POD, namespace, build_pod(body, control.create_attempt))
        except ApiError as exc:
            if exc.status >= 500:
                raise
            # Refused (a ResourceQuota, a policy): say so on the Job, as the Job
            # controller does, and try again later; nothing about the run changes yet.
            ref = ObjectRef(JOB.api_version, JOB.kind, namespace, name, job.uid)
            rt.events.post(
                ref, "FailedCreate", f"pod of attempt {control.create_attempt}: {exc}", warning=True
            )
            asyncio.get_running_loop().call_later(
                POD_RETRY_SECONDS, wake_invocation, rt, namespace, name
            )
            return job, pods
        if created is not None:  # None: an earlier pass made it (deterministic name)
            logger.info("created pod %s/%s", namespace, created["metadata"]["name"])
            pods = [*pods, summarize_pod(created)]
    if control.status is not None:
        # A patch, not a PUT: a Job's status update keeps only the spec of the stored
        # object, and would take the metadata (owner references, labels) from the body.
        patch = {"metadata": {"resourceVersion": job.resource_version}, "status": control.status}
        written = await rt.api.patch(JOB, namespace, name, patch, "status")
        if written is not None:  # None: changed meanwhile; its event brings the next pass
            job = job_record(JobObject.model_validate(written))
            rt.recent_jobs[key] = job
    if control.wake_after is not None:
        asyncio.get_running_loop().call_later(
            control.wake_after, wake_invocation, rt, namespace, name
        )
    return job, pods


def _latest(rt: Runtime, body: Body) -> Body:
    """The newest invocation body known: the watch's, or our own status write that the
    watch has not delivered yet (the watch still holds the version it replaced)."""
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    body = rt.invocations.get(key) or body
    written = rt.written.get(key)
    if written is not None:
        base, newer = written
        if body["metadata"].get("resourceVersion") == base:
            return newer
        del rt.written[key]  # the watch has it (or something newer)
    return body


def _retry_later(rt: Runtime, body: Body, spec: FlowInvocationSpec) -> None:
    """Reconcile a waiting invocation again when its flow changes, and on a backoff timer
    (half the time waited so far, between 0.5 and 8 s) so the deadline is kept."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    rt.waiting.setdefault((namespace, spec.flow), set()).add(name)
    waited = (datetime.now(UTC) - _parse_time(meta["creationTimestamp"])).total_seconds()
    delay = min(max(waited / 2, RETRY_MIN_SECONDS), RETRY_MAX_SECONDS)
    left = (_resolve_deadline(rt, body, spec) - datetime.now(UTC)).total_seconds()
    asyncio.get_running_loop().call_later(
        max(0.0, min(delay, left + 0.1)), wake_invocation, rt, namespace, name
    )


def wake_invocation(rt: Runtime, namespace: str, name: str) -> None:
    """Reconcile a running invocation again, if it still runs."""
    body = rt.invocations.get((namespace, name))
    if body is not None:
        rt.spawn(reconcile_invocation(rt, body))


def wake_waiting(rt: Runtime, flow_key: tuple[str, str]) -> None:
    """The flow changed: its waiting invocations try again."""
    for name in rt.waiting.pop(flow_key, ()):
        wake_invocation(rt, flow_key[0], name)


def invocation_finished(rt: Runtime, key: tuple[str, str]) -> bool:
    """Whether the invocation's newest known status (the watch's, or our own write) is
    finished, or it is not watched at all (finished or deleted)."""
    body = rt.invocations.get(key)
    if body is None:
        return True
    phase = (_latest(rt, body).get("status") or {}).get("phase")
    return phase is not None and Phase(phase).finished


def forget_invocation(rt: Runtime, namespace: str, name: str) -> None:
    """The invocation left the watch: deleted, or finished (frozen from then on)."""
    key = (namespace, name)
    rt.gate.forget(key)
    rt.invocations.pop(key, None)
    rt.written.pop(key, None)
    rt.recent_jobs.pop(key, None)
    rt.job_bodies.pop(key, None)


async def reconcile_invocation(rt: Runtime, body: Body) -> None:
    """One pass over one invocation. An error that is not the API's (a bug, a body no
    rule foresaw) is logged and counted here, for this invocation alone: the caller —
    a watch event, a wake-up, the resync loop — goes on with the others."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    if meta.get("deletionTimestamp"):
        return
    await rt.synced.wait()  # resolve only against a complete view of versions and routes
    async with rt.locks((namespace, name)):
        started = time.perf_counter()
        try:
            await _reconcile(rt, body)
        except (ApiError, aiohttp.ClientError, TimeoutError):
            raise  # the API's: the caller retries (kopf, the resync loop)
        except Exception:
            metrics.RECONCILE_ERRORS.labels("FlowInvocation").inc()
            logger.exception("reconcile of invocation %s/%s failed", namespace, name)
        finally:
            elapsed = time.perf_counter() - started
            metrics.RECONCILE_SECONDS.labels("FlowInvocation").observe(elapsed)


async def _reconcile(rt: Runtime, body: Body) -> None:
    # The body we were handed may be older than the watch's or our own last write.
    body = _latest(rt, body)
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    spec = FlowInvocationSpec.model_validate(body["spec"])
    raw_status = body.get("status")
    previous = FlowInvocationStatus.model_validate(raw_status) if raw_status else None
    if previous is not None and previous.phase is not None and previous.phase.finished:
        return

    job = await _job(rt, namespace, name, previous)
    early: PodSummary | None = None
    outcome: ResolvedChain | Failure | Waiting | Queued | None
    if job is not None and not job.owned_by(meta["uid"]):
        outcome, job = _not_ours(job, name), None
    elif job is not None:
        outcome = job.chain or (previous.resolved if previous else None)
    elif previous is not None and previous.resolved is not None:
        outcome = previous.resolved  # the Job is gone: derive says JobDeleted or Cancelled
    elif spec.cancel_requested:
        outcome = None
    else:
        outcome, job, early = await _dispatch(rt, body, spec, previous)
    if isinstance(outcome, Waiting):
        _retry_later(rt, body, spec)

    pods = await _pods(rt, namespace, name, job)
    if early is not None and all(p.name != early.name for p in pods):
        pods.append(early)  # made this pass; the pod watch has not delivered it yet
    if (
        job is not None
        and job.managed
        and isinstance(outcome, ResolvedChain)
        and not spec.cancel_requested
    ):
        job, pods = await _run_job(rt, namespace, name, job, pods)
    summary = job.summary if job else None
    status = derive_invocation_status(
        spec,
        previous,
        outcome,
        summary,
        pods,
        datetime.now(UTC),
        meta.get("generation"),
    )
    wire = status.wire()
    if raw_status == wire:
        return
    if status.phase is not None and status.phase.finished and needs_job_deleted(status, summary):
        await rt.api.delete(JOB, namespace, name)  # before the status freezes the invocation
    written = await rt.api.replace(INVOCATION, {**body, "status": wire}, "status")
    if written is None:
        return  # a newer version exists; its event brings another pass
    rt.written[(namespace, name)] = (meta.get("resourceVersion", ""), written)
    if status.phase is not None and status.phase.finished:
        rt.gate.forget((namespace, name))  # its slot (or place in line) is free now
    if previous is None or previous.phase != status.phase:
        assert status.phase is not None
        metrics.INVOCATIONS.labels(status.phase.value).inc()
        detail = status.message or (f"job {status.job_name}" if status.job_name else "")
        rt.events.post(_ref(body), status.phase.value, detail, warning=status.phase == Phase.FAILED)
