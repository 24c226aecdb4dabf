"""Wiring: the informers, workers and timers of one operator process.

kopf watches running invocations and calls `handlers.invocation_event`; everything
else the operator needs to know comes from informers started here, each feeding a
slim model: versions and routes (`flows`), Jobs and running pods (`runs`), finished
runs (`retention`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from kitaru.core.names import LABEL_INVOCATION
from kitaru.core.retention import Retention

from kitaru_operator.events import EventRecorder
from kitaru_operator.flow_reconcile import FlowReconciler
from kitaru_operator.flows import (
    DeploymentSink,
    Flows,
    RouteSink,
    deployment_record,
    route_record,
)
from kitaru_operator.informer import Informer
from kitaru_operator.invocations import reconcile_invocation, wake_waiting
from kitaru_operator.kube import (
    DEPLOYMENT,
    INVOCATION,
    JOB,
    POD,
    PROMOTION,
    ROUTE,
    ApiError,
    AsyncKube,
)
from kitaru_operator.objects import (
    FinishedInvocation,
    JobObject,
    Object,
    Observed,
    RouteObject,
)
from kitaru_operator.promotions import FinishedRuns, Promotions, promotion_record
from kitaru_operator.retention import (
    FINISHED_SELECTOR,
    RetentionKeeper,
    VersionRetention,
    finished_run,
)
from kitaru_operator.runs import (
    RUNNING_POD_SELECTOR,
    Jobs,
    RunningPods,
    job_record,
    pod_record,
)
from kitaru_operator.runtime import Runtime
from kitaru_operator.settings import OperatorConfig

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
        promotions.flow_changed(key)

    flows = Flows(on_change=flow_changed)

    def owner_changed(namespace: str, name: str) -> None:
        body = rt.invocations.get((namespace, name))
        if body is not None:
            rt.spawn(reconcile_invocation(rt, body))

    rt = Runtime(
        api=api,
        events=EventRecorder(api),
        flows=flows,
        jobs=Jobs(owner_changed),
        pods=RunningPods(owner_changed),
        retention=RetentionKeeper(api, config.retention, _version_retention(flows)),
        resolve_deadline_seconds=config.resolve_deadline_seconds,
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
            finished_run,
            FinishedRuns(rt.retention, promotions),
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
    rt.spawn(_when_synced(rt, needed, finished, config.route_history_limit))
    rt.spawn(_promote_when_synced(rt, promotions, promotion_informers))
    rt.spawn(_resync_running(rt, config.resync_seconds))
    return rt


async def _when_synced(
    rt: Runtime,
    needed: list[Informer[Any, Any]],
    finished: list[Informer[Any, Any]],
    route_history_limit: int,
) -> None:
    """Once everything resolution needs is listed: open the gate, reconcile flows, then
    start retention (it reads the versions' retention settings)."""
    await asyncio.gather(*(informer.synced.wait() for informer in needed))
    rt.synced.set()
    logger.info("synced: %d flows in memory", len(rt.flows.states))
    reconciler = FlowReconciler(
        rt.api, rt.flows, rt.events, route_history_limit=route_history_limit
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
    await rt.api.close()
