"""Deleting a whole flow and pruning its untagged versions."""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING

from kitaru.client.errors import Conflict, NotFound, Rejected
from kitaru.client.records import FlowSummary, PruneSummary
from kitaru.client.rules import not_found, of_flow, route_views
from kitaru.client.versions import record_high_water_mark, version_state
from kitaru.core.names import ANNOTATION_DELETING_FLOW, DEPLOYMENTS, ROUTES, deployment_name
from kitaru.core.routing import no_deployments

if TYPE_CHECKING:
    from kitaru.client.kube import Kube

DELETE_SWEEPS = 10


def delete_whole_flow(kube: Kube, flow: str) -> FlowSummary:
    """Delete every route and version of `flow`, `default` included (on purpose).

    Every route of the flow is marked `kitaru.dev/deleting-flow` first, which lets the
    API server delete the versions its exclusive tags hold; versions go before routes,
    so the operator never sees versions without a `default` to bootstrap. A deploy
    racing the delete leaves something behind: the next sweep, at once, takes it.
    """
    selected = of_flow(flow)
    deleted_versions: set[int] = set()
    deleted_tags: set[str] = set()
    for _ in range(DELETE_SWEEPS):
        routes = kube.list(ROUTES, field_selector=selected)
        versions = kube.list(DEPLOYMENTS, field_selector=selected)
        if not routes and not versions:
            break
        for route in routes:
            _mark_deleting(kube, route["metadata"]["name"])
        for obj in versions:
            with suppress(Rejected):  # a route created meanwhile: the next sweep marks it
                _delete_quietly(kube, DEPLOYMENTS, obj["metadata"]["name"])
                deleted_versions.add(int(obj["spec"]["version"]))
        for route in routes:
            _delete_quietly(kube, ROUTES, route["metadata"]["name"])
            deleted_tags.add(route["spec"]["tag"])
    else:
        raise Conflict(f"flow '{flow}' kept getting new versions while being deleted; try again")
    if not deleted_versions and not deleted_tags:
        raise not_found(no_deployments(flow))
    return FlowSummary(flow, tuple(sorted(deleted_versions)), None, tuple(sorted(deleted_tags)))


def prune_untagged(kube: Kube, flow: str, keep: int) -> PruneSummary:
    """Delete the flow's versions that hold no tag, except the newest `keep`.

    A version that holds any tag (exclusive or shared) is never deleted, and no
    number is handed out again: the high-water mark is raised to the newest version
    first. A tag moved onto a version while it is being pruned is the one race left:
    the API server still refuses a version holding an exclusive tag, and the operator
    drops a deleted version from shared routes.
    """
    existing, _default = version_state(kube, flow)
    if not existing:
        raise not_found(no_deployments(flow))
    newest_first = sorted(existing, reverse=True)
    tagged = set().union(*(view.versions for view in route_views(kube, flow)))
    record_high_water_mark(kube, flow, newest_first[0])
    deleted = []
    for version in newest_first[keep:]:
        if version in tagged:
            continue
        try:
            kube.delete(DEPLOYMENTS, deployment_name(flow, version))
        except NotFound:
            continue
        except Rejected:  # an exclusive tag arrived meanwhile
            tagged.add(version)
            continue
        deleted.append(version)
    return PruneSummary(
        flow=flow,
        deleted=tuple(sorted(deleted)),
        kept_newest=tuple(sorted(newest_first[:keep])),
        kept_tagged=tuple(sorted(v for v in newest_first[keep:] if v in tagged)),
    )


def _mark_deleting(kube: Kube, route: str) -> None:
    with suppress(NotFound):
        kube.patch(ROUTES, route, {"metadata": {"annotations": {ANNOTATION_DELETING_FLOW: "true"}}})


def _delete_quietly(kube: Kube, plural: str, name: str) -> None:
    with suppress(NotFound):
        kube.delete(plural, name)
