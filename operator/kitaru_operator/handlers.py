"""The module kopf loads (`kopf run -m kitaru_operator.handlers`): registration only.

Handlers are `on.event` (no kopf progress annotations, finalizers or per-handler
patches: a dispatch costs only our own two API calls) over level-based reconciles
in `reconcile_flows` and `reconcile_invocations`; a resync loop started here
re-runs them to correct drift and to apply TTLs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any

import kopf
from kitaru.core.names import API_VERSION, DEPLOYMENTS, GROUP, INVOCATIONS, LABEL_INVOCATION, ROUTES

from kitaru_operator import indexes as ix
from kitaru_operator.kube import AsyncKube
from kitaru_operator.reconcile_flows import reconcile_flow
from kitaru_operator.reconcile_invocations import forget_invocation, reconcile_invocation
from kitaru_operator.resync import resync_forever
from kitaru_operator.runtime import Runtime
from kitaru_operator.settings import WORKERS, configure_settings, runtime_from

OWNED = {LABEL_INVOCATION: kopf.PRESENT}


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    configure_settings(settings)
    memo.runtime = runtime_from(kwargs)
    memo.runtime.akube = AsyncKube.from_environment(limit=WORKERS)
    memo.resync = asyncio.create_task(resync_forever(memo.runtime))


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster token, else $KUBECONFIG read now (the client library reads it at import).

    kopf's service-account login hard-codes https://kubernetes.default.svc; the
    address a kubelet gives the pod works without cluster DNS too.
    """
    info = kopf.login_with_service_account(**kwargs)
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT")
    if info is not None and host and port:
        server_host = f"[{host}]" if ":" in host else host
        return dataclasses.replace(info, server=f"https://{server_host}:{port}")
    return info or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    if "resync" in memo:
        memo.resync.cancel()
    if "runtime" in memo and memo.runtime.akube is not None:
        await memo.runtime.akube.close()


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
def route_event(body: kopf.Body, namespace: str | None, memo: Any, **_: Any) -> None:
    reconcile_flow(_runtime(memo), str(namespace), body["spec"]["flow"])


# The invocation path is async: it runs on kopf's event loop with pooled connections
# (no thread-pool hop per event); flows and routes above stay sync in the pool.


@kopf.on.event(GROUP, API_VERSION, INVOCATIONS, id="reconcile-invocation")
async def invocation_event(body: kopf.Body, type: str, memo: Any, **_: Any) -> None:
    if type == "DELETED":
        forget_invocation(_runtime(memo), body["metadata"]["namespace"], body["metadata"]["name"])
    else:
        await reconcile_invocation(_runtime(memo), ix.plain(body))


async def _owner_changed(body: kopf.Body, namespace: str | None, memo: kopf.Memo) -> None:
    """A Job or pod of an invocation changed: reconcile the invocation it belongs to."""
    runtime = _runtime(memo)
    owner = runtime.indexes.invocation(str(namespace), body["metadata"]["labels"][LABEL_INVOCATION])
    if owner is not None:
        await reconcile_invocation(runtime, owner)


@kopf.on.event("batch", "v1", "jobs", labels=OWNED, id="track-job")
async def job_event(body: kopf.Body, namespace: str | None, memo: Any, **_: Any) -> None:
    await _owner_changed(body, namespace, memo)


@kopf.on.event("", "v1", "pods", labels=OWNED, id="track-pod")
async def pod_event(body: kopf.Body, namespace: str | None, memo: Any, **_: Any) -> None:
    await _owner_changed(body, namespace, memo)
