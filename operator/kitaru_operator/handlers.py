"""The module kopf loads (`kopf run -m kitaru_operator.handlers`): registration only.

Handlers are `on.event` (no kopf progress annotations, finalizers or per-handler
patches: a dispatch costs only our own two API calls) over level-based reconciles
in `reconcile_flows` and `reconcile_invocations`; a resync loop started here
re-runs them to correct drift and to apply TTLs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
from kitaru.core.names import API_VERSION, DEPLOYMENTS, GROUP, INVOCATIONS, LABEL_INVOCATION, ROUTES

from kitaru_operator import indexes as ix
from kitaru_operator.reconcile_flows import note_route_deleted, reconcile_flow
from kitaru_operator.reconcile_invocations import reconcile_invocation
from kitaru_operator.resync import resync_forever
from kitaru_operator.runtime import Runtime
from kitaru_operator.settings import configure_settings, runtime_from

OWNED = {LABEL_INVOCATION: kopf.PRESENT}


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    configure_settings(settings)
    memo.runtime = runtime_from(kwargs)
    memo.resync = asyncio.create_task(resync_forever(memo.runtime))


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster token, else $KUBECONFIG read now (the client library reads it at import)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    if "resync" in memo:
        memo.resync.cancel()


# --- indexes --------------------------------------------------------------------------


@kopf.index(GROUP, API_VERSION, DEPLOYMENTS, id=ix.DEPLOYMENTS_BY_VERSION)
async def deployments_by_version(namespace: str | None, body: kopf.Body, **_: Any) -> dict:
    return ix.deployment_by_version(namespace, body)


@kopf.index(GROUP, API_VERSION, DEPLOYMENTS, id=ix.DEPLOYMENTS_BY_FLOW)
async def deployments_by_flow(namespace: str | None, body: kopf.Body, **_: Any) -> dict:
    return ix.deployment_by_flow(namespace, body)


@kopf.index(GROUP, API_VERSION, ROUTES, id=ix.ROUTES_BY_TAG)
async def routes_by_tag(namespace: str | None, body: kopf.Body, **_: Any) -> dict:
    return ix.route_by_tag(namespace, body)


@kopf.index(GROUP, API_VERSION, ROUTES, id=ix.ROUTES_BY_FLOW)
async def routes_by_flow(namespace: str | None, body: kopf.Body, **_: Any) -> dict:
    return ix.route_by_flow(namespace, body)


@kopf.index(GROUP, API_VERSION, INVOCATIONS, id=ix.INVOCATIONS)
async def invocations(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict:
    return ix.invocation(namespace, name, body)


@kopf.index("batch", "v1", "jobs", labels=OWNED, id=ix.JOBS)
async def jobs(namespace: str | None, body: kopf.Body, **_: Any) -> dict:
    return ix.by_invocation_label(namespace, body)


@kopf.index("", "v1", "pods", labels=OWNED, id=ix.PODS)
async def pods(namespace: str | None, body: kopf.Body, **_: Any) -> dict:
    return ix.by_invocation_label(namespace, body)


# --- reconciles -------------------------------------------------------------------------


def _runtime(memo: Any) -> Runtime:
    runtime: Runtime = memo.runtime
    return runtime


@kopf.on.event(GROUP, API_VERSION, DEPLOYMENTS, id="reconcile-deployment")
def deployment_event(body: kopf.Body, namespace: str | None, memo: Any, **_: Any) -> None:
    reconcile_flow(_runtime(memo), str(namespace), body["spec"]["flow"])


@kopf.on.event(GROUP, API_VERSION, ROUTES, id="reconcile-route")
def route_event(body: kopf.Body, type: str, namespace: str | None, memo: Any, **_: Any) -> None:
    if type == "DELETED":
        note_route_deleted(_runtime(memo), ix.plain(body))
    reconcile_flow(_runtime(memo), str(namespace), body["spec"]["flow"])


@kopf.on.event(GROUP, API_VERSION, INVOCATIONS, id="reconcile-invocation")
def invocation_event(body: kopf.Body, type: str, memo: Any, **_: Any) -> None:
    if type != "DELETED":
        reconcile_invocation(_runtime(memo), ix.plain(body))


def _owner_changed(body: kopf.Body, namespace: str | None, memo: kopf.Memo) -> None:
    """A Job or pod of an invocation changed: reconcile the invocation it belongs to."""
    runtime = _runtime(memo)
    owner = runtime.indexes.invocation(str(namespace), body["metadata"]["labels"][LABEL_INVOCATION])
    if owner is not None:
        reconcile_invocation(runtime, owner)


@kopf.on.event("batch", "v1", "jobs", labels=OWNED, id="track-job")
def job_event(body: kopf.Body, namespace: str | None, memo: Any, **_: Any) -> None:
    _owner_changed(body, namespace, memo)


@kopf.on.event("", "v1", "pods", labels=OWNED, id="track-pod")
def pod_event(body: kopf.Body, namespace: str | None, memo: Any, **_: Any) -> None:
    _owner_changed(body, namespace, memo)
