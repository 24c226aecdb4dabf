"""Wiring: the informers, workers and timers of one operator process.

kopf watches running invocations and calls `handlers.invocation_event`; everything
else the operator needs to know comes from informers started here, each feeding a
slim model: versions and routes (`flows`), Jobs and running pods (`runs`), finished
runs (`retention`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import aiohttp
from kitaru.core.models import Phase
from kitaru.core.names import LABEL_INVOCATION, LABEL_SCHEDULE
from kitaru.core.retention import Retention

from kitaru_operator.concurrency import ConcurrencyGate, requested_tag
from kitaru_operator.events import EventRecorder
from kitaru_operator.finished import FinishedRuns, finished_record
from kitaru_operator.flow_reconcile import FlowReconciler
from kitaru_operator.flows import (
    DeploymentSink,
    Flows,
    RouteSink,
    deployment_record,
    route_record,
)
from kitaru_operator.informer import Informer
from kitaru_operator.input_checks import InputChecker
from kitaru_operator.invocations import (
    invocation_finished,
    reconcile_invocation,
    wake_invocation,
    wake_waiting,
)
from kitaru_operator.kube import (
    DEPLOYMENT,
    INVOCATION,
    JOB,
    POD,
    PROMOTION,
    ROUTE,
    SCHEDULE,
    ApiError,
    AsyncKube,
)
from kitaru_operator.objects import (
    FinishedInvocation,
    JobObject,
    Object,
    Observed,
    RouteObject,
    ScheduledInvocation,
)
from kitaru_operator.promotions import Promotions, promotion_record
from kitaru_operator.retention import (
    FINISHED_SELECTOR,
    RetentionKeeper,
    VersionRetention,
)
from kitaru_operator.runs import (
    RUNNING_POD_SELECTOR,
    JobRecord,
    Jobs,
    RunningPods,
    job_record,
    pod_record,
)
from kitaru_operator.runtime import Runtime
from kitaru_operator.schedules import ScheduleBook, scheduled_run_record
from kitaru_operator.settings import OperatorConfig
from kitaru_operator.shadows import ShadowTally

logger = logging.getLogger("kitaru_operator")


def _version_retention(flows: Flows) -> VersionRetention:
    """A version's own retention settings (its stack), from the model."""

    def lookup(namespace: str, flow: str, version: int) -> Retention:
        state = flows.state(namespace, flow)
        record = state.deployments.get(version) if state else None
        if record is None:
            return Retention()
        return Retention(record.ttl_seconds_after_finished, record.history_limit)

    return lookup


async def start(config: OperatorConfig) -> Runtime:
    """Build the runtime and start its background work (stopped by `stop`)."""
    api = AsyncKube.from_environment()

    def flow_changed(key: tuple[str, str]) -> None:
        wake_waiting(rt, key)
        gate.flow_changed(*key)
        promotions.flow_changed(key)

    flows = Flows(on_change=flow_changed)

    def owner_changed(namespace: str, name: str) -> None:
        body = rt.invocations.get((namespace, name))
        if body is not None:
            rt.spawn(reconcile_invocation(rt, body))

    gate = ConcurrencyGate(flows, lambda namespace, name: wake_invocation(rt, namespace, name))

    def job_activity(key: tuple[str, str], job: JobRecord | None) -> None:
        """A Job not finished holds its run's slot. One finished or gone frees it only
        once the run's status says finished too (else that write frees it): a reader never
        sees the next run start first. Also undoes a slot counted from a stale event."""
        if job is not None and job.running and job.chain is not None and job.flow:
            gate.job_running(key, job.flow, job.chain.tag)
        elif invocation_finished(rt, key):
            gate.release(key)

    rt = Runtime(
        api=api,
        events=EventRecorder(api),
        flows=flows,
        jobs=Jobs(owner_changed, job_activity),
        pods=RunningPods(owner_changed),
        retention=RetentionKeeper(api, config.retention, _version_retention(flows)),
        shadows=ShadowTally(lambda ns, flow, tag: flows.mark((ns, flow)).routes.add(tag)),
        gate=gate,
        resolve_deadline_seconds=config.resolve_deadline_seconds,
        input_checker=InputChecker(timeout=config.input_check_timeout_seconds),
        default_runner_image=config.default_runner_image,
    )
    promotions = Promotions(api, flows, rt.events)
    needed: list[Informer[Any, Any]] = []
    for scope in config.scopes:
        needed += [
            Informer(api, DEPLOYMENT, scope, Object, deployment_record, DeploymentSink(flows)),
            Informer(api, ROUTE, scope, RouteObject, route_record, RouteSink(flows)),
            Informer(
                api, JOB, scope, JobObject, job_record, rt.jobs, label_selector=LABEL_INVOCATION
            ),
            Informer(
                api,
                POD,
                scope,
                Observed,
                pod_record,
                rt.pods,
                label_selector=LABEL_INVOCATION,
                field_selector=RUNNING_POD_SELECTOR,
            ),
        ]
    finished = [
        Informer(
            api,
            INVOCATION,
            scope,
            FinishedInvocation,
            finished_record,
            FinishedRuns(rt.retention, rt.shadows, promotions),
            field_selector=FINISHED_SELECTOR,
        )
        for scope in config.scopes
    ]
    promotion_informers = [
        Informer(api, PROMOTION, scope, Object, promotion_record, promotions)
        for scope in config.scopes
    ]
    rt.spawn(rt.events.run())
    for informer in needed:
        rt.spawn(informer.run())
    rt.schedules = ScheduleBook(api, rt.events, rt.spawn, config.schedule_clock)
    scheduling = [
        informer
        for scope in config.scopes
        for informer in (
            Informer(api, SCHEDULE, scope, Object, lambda o: o, rt.schedules),
            Informer(
                api,
                INVOCATION,
                scope,
                ScheduledInvocation,
                scheduled_run_record,
                rt.schedules.runs,
                label_selector=LABEL_SCHEDULE,
            ),
        )
    ]
    rt.spawn(_when_synced(rt, needed, finished, config.route_history_limit, config.scopes))
    for informer in scheduling:
        rt.spawn(informer.run())
    rt.spawn(_start_schedules(rt.schedules, scheduling))
    rt.spawn(_promote_when_synced(rt, promotions, promotion_informers))
    rt.spawn(_resync_running(rt, config.resync_seconds))
    return rt


async def _when_synced(
    rt: Runtime,
    needed: list[Informer[Any, Any]],
    finished: list[Informer[Any, Any]],
    route_history_limit: int,
    scopes: Iterable[str | None],
) -> None:
    """Once everything resolution needs is listed: open the gate, reconcile flows, then
    start retention (it reads the versions' retention settings)."""
    await asyncio.gather(*(informer.synced.wait() for informer in needed))
    for scope in scopes:
        await _queued_in_order(rt, scope)
    rt.synced.set()
    logger.info("synced: %d flows in memory", len(rt.flows.states))
    reconciler = FlowReconciler(
        rt.api,
        rt.flows,
        rt.events,
        route_history_limit=route_history_limit,
        shadow_summary=rt.shadows.summary,
        default_runner_image=rt.default_runner_image,
    )
    rt.spawn(reconciler.run())
    for informer in finished:
        rt.spawn(informer.run())
    rt.spawn(rt.retention.run())
    rt.spawn(rt.retention.run_deleter())
    await asyncio.gather(*(informer.synced.wait() for informer in finished))
    rt.retention.listed.set()
    rt.retention.wake.set()
    kept = sum(len(history) for history in rt.retention.histories.values())
    logger.info("retention: listed finished runs, %d kept for deletion later", kept)


async def _start_schedules(book: ScheduleBook, informers: list[Informer[Any, Any]]) -> None:
    """Once schedules and their runs are listed, arm every schedule (missed ticks first)."""
    await asyncio.gather(*(informer.synced.wait() for informer in informers))
    book.start()
    logger.info("schedules: %d armed", len(book.objects))


async def _queued_in_order(rt: Runtime, scope: str | None) -> None:
    """Put the runs queued before a restart back in line, oldest first, before anything
    is dispatched: a newer run reconciled first must not overtake them. (One list of the
    Queued ones, at start-up only.)"""
    queued = await rt.api.list_all(
        INVOCATION, scope, field_selector=f"status.phase={Phase.QUEUED.value}"
    )
    for body in queued:
        meta, spec = body["metadata"], body["spec"]
        tag = requested_tag(spec.get("tag"), spec.get("version"))
        rt.gate.enqueue(
            meta["namespace"], meta["name"], meta["creationTimestamp"], spec["flow"], tag
        )
    if queued:
        logger.info("%d queued runs back in line", len(queued))


async def _promote_when_synced(
    rt: Runtime, promotions: Promotions, informers: list[Informer[Any, Any]]
) -> None:
    """Promotions read the routes and versions: they start once those are listed."""
    await rt.synced.wait()
    for informer in informers:
        rt.spawn(informer.run())
    try:
        await promotions.run()
    finally:
        promotions.stop()


async def _resync_running(rt: Runtime, interval: float) -> None:
    """Re-run the reconcile of every running invocation now and then: a retry for a
    pass that failed, and drift correction. Finished runs are not visited."""
    while True:
        await asyncio.sleep(interval)
        for body in list(rt.invocations.values()):
            try:
                await reconcile_invocation(rt, body)
            except (ApiError, aiohttp.ClientError, TimeoutError) as exc:
                logger.warning("resync of %s failed: %s", body["metadata"]["name"], exc)
            await asyncio.sleep(0)


async def stop(rt: Runtime) -> None:
    """The background work ends (wake-ups that fire meanwhile start nothing), then the
    API client closes: nothing is left to call it."""
    await rt.background.stop()
    await rt.input_checker.close()
    await rt.api.close()
