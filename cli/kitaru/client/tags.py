"""Tag and untag: compare-and-swap on the FlowRoute.

Read the route, apply the core rule (`apply_tag`, `remove_tag`), replace with the read
resourceVersion (or create, or delete), and start over on 409.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from kitaru.client.errors import Conflict, IncompatibleSchema, NotFound
from kitaru.client.kube import AlreadyExists, StaleObject
from kitaru.client.records import RouteInfo, route_info
from kitaru.client.retry import attempts
from kitaru.client.rules import core_errors, not_found
from kitaru.core.compat import format_accepted, incompatibility_message, route_incompatibilities
from kitaru.core.manifests import build_route, route_view
from kitaru.core.names import (
    ANNOTATION_SCHEMA_ACCEPTED,
    DEPLOYMENTS,
    ROUTES,
    deployment_name,
    route_name,
)
from kitaru.core.routing import tag_not_found
from kitaru.core.tagging import apply_tag, remove_tag

if TYPE_CHECKING:
    from kitaru.client.kube import Kube


def set_tag(
    kube: Kube,
    flow: str,
    tag: str,
    version: int,
    exclusive: bool,
    *,
    force: bool = False,
    schema: Mapping[str, Any] | None = None,
) -> RouteInfo:
    """Route `tag` to `version`: exclusive moves it there, shared adds the version.

    When `version` is new to the route and its input schema (`schema`, else read from
    the version) rejects inputs the route's current versions accept, the move is refused
    with IncompatibleSchema — unless `force`, which records the acceptance on the route
    (`kitaru.dev/schema-accepted`) so the operator does not flag it.
    """
    for _ in attempts():
        current = kube.get(ROUTES, route_name(flow, tag))
        before = route_view(current)
        with core_errors():
            view = apply_tag(before, flow, tag, version, exclusive)
        try:
            if current is None or before is None:
                return route_info(kube.create(ROUTES, build_route(view)))
            if view == before:
                return route_info(current)
            findings: list[str] = []
            if version not in before.versions:
                findings = check_tag_move(
                    kube, flow, tag, version, before.versions, schema, force=force
                )
            body = build_route(view, current)
            annotations = body["metadata"].setdefault("annotations", {})
            if findings:
                annotations[ANNOTATION_SCHEMA_ACCEPTED] = format_accepted(view.versions)
            else:
                annotations.pop(ANNOTATION_SCHEMA_ACCEPTED, None)
            return route_info(kube.replace(ROUTES, body))
        except (AlreadyExists, StaleObject):
            continue
    raise Conflict(f"tag '{tag}' of flow '{flow}' kept changing; try again")


def check_tag_move(
    kube: Kube,
    flow: str,
    tag: str,
    version: int,
    current: Collection[int],
    schema: Mapping[str, Any] | None,
    *,
    force: bool,
) -> list[str]:
    """What `version` would reject of the inputs the route's `current` versions accept;
    raises IncompatibleSchema when that is something and the move is not forced."""
    others = [v for v in current if v != version]
    if not others:
        return []
    schemas = input_schemas(kube, flow, others)
    if schema is None:
        schema = input_schemas(kube, flow, [version]).get(version)
    findings = route_incompatibilities(schemas, version, schema)
    if findings and not force:
        raise IncompatibleSchema(
            incompatibility_message(flow, tag, version, sorted(others), findings), findings
        )
    return findings


def input_schemas(
    kube: Kube, flow: str, versions: Collection[int]
) -> dict[int, Mapping[str, Any] | None]:
    """The input schemas of those of `versions` that exist (None: a version without one)."""
    schemas: dict[int, Mapping[str, Any] | None] = {}
    for v in sorted(versions):
        body = kube.get(DEPLOYMENTS, deployment_name(flow, v))
        if body is not None:
            schemas[v] = (body.get("spec") or {}).get("inputSchema")
    return schemas


def unset_tag(kube: Kube, flow: str, tag: str, version: int | None) -> RouteInfo:
    """Take `tag` off `version` (None: off its only version); an empty route is deleted."""
    name = route_name(flow, tag)
    for _ in attempts():
        current = kube.get(ROUTES, name)
        view = route_view(current)
        if current is None or view is None:
            raise not_found(tag_not_found(flow, tag))
        with core_errors():
            remaining = remove_tag(view, version)
        try:
            if remaining is None:
                kube.delete(
                    ROUTES, route_name(flow, tag), current["metadata"].get("resourceVersion")
                )
                return RouteInfo(flow=flow, tag=tag, exclusive=view.exclusive, versions=())
            return route_info(kube.replace(ROUTES, build_route(remaining, current)))
        except StaleObject:
            continue
        except NotFound:
            continue
    raise Conflict(f"tag '{tag}' of flow '{flow}' kept changing; try again")
