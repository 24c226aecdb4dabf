"""The level-based reconcile of a flow's FlowDeployments and FlowRoutes.

Deployments and routes of one flow depend on each other (a deployment's tags come
from the routes, a route's readiness from the deployments), so one pass per flow
reconciles both kinds from the indexes:

- bootstrap the `default` route (lowest version) when the flow has versions and
  no default route — a create with a deterministic name, 409 means done;
- raise the high-water-mark annotation on the default route (compare-and-swap);
- drop deleted versions from shared routes (delete a shared route left empty);
- write every status that changed (deployments: tags, Ready; routes: Ready,
  resolvedVersion) via the status subresource with resourceVersion.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from kitaru.core.models import (
    FlowDeploymentSpec,
    FlowDeploymentStatus,
    FlowRouteSpec,
    FlowRouteStatus,
)
from kitaru.core.names import (
    ANNOTATION_HIGHEST_VERSION,
    DEFAULT_TAG,
    DEPLOYMENTS,
    GROUP_VERSION,
    LABEL_FLOW,
    LABEL_TAG,
    ROUTES,
    deployment_name,
    route_name,
)
from kitaru.core.status import (
    deployment_status_is_current,
    derive_deployment_status,
    derive_route_status,
)
from kitaru.core.tagging import tags_for_version
from kitaru.core.versioning import route_high_water_mark, with_high_water_mark

from kitaru_operator import metrics
from kitaru_operator.indexes import route_view
from kitaru_operator.runtime import Runtime, post_event

logger = logging.getLogger("kitaru_operator")
Body = dict[str, Any]
CAS_ATTEMPTS = 5


def _bootstrap_default(rt: Runtime, namespace: str, flow: str, versions: list[int]) -> None:
    name = route_name(flow, DEFAULT_TAG)
    body = {
        "apiVersion": GROUP_VERSION,
        "kind": "FlowRoute",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {LABEL_FLOW: flow, LABEL_TAG: DEFAULT_TAG},
            "annotations": {ANNOTATION_HIGHEST_VERSION: str(max(versions))},
        },
        "spec": {"flow": flow, "tag": DEFAULT_TAG, "exclusive": True, "versions": [min(versions)]},
    }
    if rt.kube.create(ROUTES, namespace, body):
        logger.info("created default route %s/%s -> v%d", namespace, name, min(versions))
        post_event(body, "DefaultRouteCreated", f"{DEFAULT_TAG} routes to version {min(versions)}")


def _raise_high_water_mark(rt: Runtime, route: Body, highest: int) -> None:
    """Compare-and-swap the annotation up to `highest`; re-read on conflict."""
    current: Body | None = route
    for _ in range(CAS_ATTEMPTS):
        updated = None if current is None else with_high_water_mark(current, highest)
        if current is None or updated is None:
            return
        meta = current["metadata"]
        if rt.kube.replace(ROUTES, updated):
            logger.info(
                "raised high-water mark of %s/%s to %d", meta["namespace"], meta["name"], highest
            )
            return
        current = rt.kube.get(ROUTES, meta["namespace"], meta["name"])


def _prune_deleted_versions(rt: Runtime, route: Body, existing: set[int], highest: int) -> None:
    """Drop versions that existed once (<= the high-water mark) and are gone from a shared
    route. Each candidate is confirmed with a GET: the deployment index may lag a
    version created a moment ago. A version above the mark is a route to a version
    that never existed, reported as VersionNotFound instead."""
    spec = route["spec"]
    if spec.get("exclusive"):
        return
    meta = route["metadata"]
    namespace, flow = meta["namespace"], spec["flow"]
    candidates = [v for v in spec.get("versions") or [] if v not in existing and v <= highest]
    gone = {
        v
        for v in candidates
        if rt.kube.get(DEPLOYMENTS, namespace, deployment_name(flow, v)) is None
    }
    if not gone:
        return
    remaining = sorted(set(spec["versions"]) - gone)
    dropped = ", ".join(str(v) for v in sorted(gone))
    if not remaining:
        if rt.kube.delete(ROUTES, namespace, meta["name"], meta.get("resourceVersion")):
            logger.info(
                "deleted shared route %s/%s: its versions %s are gone",
                namespace,
                meta["name"],
                dropped,
            )
        return
    updated = {**route, "spec": {**spec, "versions": remaining}}
    if rt.kube.replace(ROUTES, updated):
        post_event(route, "VersionsRemoved", f"deleted version(s) {dropped} removed from the route")


def _write_status(rt: Runtime, plural: str, body: Body, wire: Body) -> bool:
    """PUT the derived status unless the object already has it; True if written."""
    return wire != body.get("status") and rt.kube.replace_status(plural, {**body, "status": wire})


def _write_statuses(rt: Runtime, deployments: list[Body], routes: list[Body]) -> None:
    now = datetime.now(UTC)
    views = [route_view(r) for r in routes]
    existing = {int(d["spec"]["version"]) for d in deployments}
    for body in deployments:
        raw = body.get("status")
        generation = body["metadata"].get("generation")
        tags = tags_for_version(views, int(body["spec"]["version"]))
        if deployment_status_is_current(raw, tags, generation):
            continue
        previous = FlowDeploymentStatus.model_validate(raw) if raw else None
        status = derive_deployment_status(
            FlowDeploymentSpec.model_validate(body["spec"]),
            views,
            previous,
            generation,
            now,
        )
        tags_changed = previous is None or previous.tag_summary != status.tag_summary
        if _write_status(rt, DEPLOYMENTS, body, status.wire()) and tags_changed:
            post_event(body, "TagsChanged", f"tags: {status.tag_summary or '(none)'}")
    for body in routes:
        raw = body.get("status")
        previous_route = FlowRouteStatus.model_validate(raw) if raw else None
        route_status = derive_route_status(
            FlowRouteSpec.model_validate(body["spec"]),
            existing,
            previous_route,
            body["metadata"].get("generation"),
            now,
        )
        if _write_status(rt, ROUTES, body, route_status.wire()):
            ready = route_status.conditions[-1] if route_status.conditions else None
            if ready is not None and (
                previous_route is None or previous_route.conditions != route_status.conditions
            ):
                post_event(body, ready.reason, ready.message, warning=ready.status != "True")


def reconcile_flow(rt: Runtime, namespace: str, flow: str) -> None:
    with rt.locks((namespace, "flow", flow)), metrics.RECONCILE_SECONDS.labels("Flow").time():
        deployments = [
            d
            for d in rt.indexes.deployments(namespace, flow)
            if not d["metadata"].get("deletionTimestamp")
        ]
        routes = rt.indexes.routes(namespace, flow)
        versions = sorted(int(d["spec"]["version"]) for d in deployments)
        default = rt.indexes.route(namespace, flow, DEFAULT_TAG)
        # "The first deployment gets default": only a version this operator has not yet
        # reconciled (no status) bootstraps it, so the versions of a flow being deleted
        # on purpose (routes first) never bring it back.
        if default is None and any(not d.get("status") for d in deployments):
            _bootstrap_default(rt, namespace, flow, versions)
        elif default is not None and versions and max(versions) > route_high_water_mark(default):
            _raise_high_water_mark(rt, default, max(versions))
        highest = max(route_high_water_mark(default), *versions, 0)
        for route in routes:
            _prune_deleted_versions(rt, route, set(versions), highest)
        _write_statuses(rt, deployments, routes)
