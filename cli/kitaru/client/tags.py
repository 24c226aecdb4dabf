"""Tag, untag and rollback: compare-and-swap on the FlowRoute.

Read the route, apply the core rule (`apply_tag`, `remove_tag`), replace with the read
resourceVersion (or create, or delete), and start over on 409.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from kitaru.client.errors import Conflict, IncompatibleSchema, NotFound
from kitaru.client.kube import AlreadyExists, StaleObject
from kitaru.client.records import RouteInfo, route_info
from kitaru.client.retry import attempts
from kitaru.client.rules import core_errors, not_found, of_flow
from kitaru.core.compat import format_accepted, incompatibility_message, route_incompatibilities
from kitaru.core.history import (
    ANNOTATION_CHANGE_GENERATION,
    ANNOTATION_CHANGED_BY,
    ANNOTATION_REASON,
    HISTORIES,
    REASON_MAX_LENGTH,
    ROLLBACK_REASON,
    history_name,
    parse_history,
    rollback_target,
)
from kitaru.core.manifests import build_route, route_view
from kitaru.core.names import (
    ANNOTATION_SCHEMA_ACCEPTED,
    DEPLOYMENTS,
    ROUTES,
    deployment_name,
    route_name,
)
from kitaru.core.queueing import limit_field
from kitaru.core.routing import RouteView, format_versions, no_deployments, tag_not_found
from kitaru.core.shadow import shadow_spec
from kitaru.core.tagging import apply_tag, remove_tag, split_tag

if TYPE_CHECKING:
    from kitaru.client.kube import Kube


def write_route(
    kube: Kube,
    view: RouteView,
    current: dict[str, Any] | None,
    reason: str | None,
    *,
    schema_accepted: bool = False,
    expires_at: str | None = None,
) -> RouteInfo:
    """Create the route for `view`, or replace `current` compare-and-swap (raises
    AlreadyExists/StaleObject on a race). The write is signed for the route history: who
    (the API server's name for this connection; admission refuses any other), the
    generation it makes (so a later kubectl edit leaves it visibly stale) and why; a move
    accepted despite its input schema names the versions accepted (so the operator does
    not flag it). `expires_at` is the route's `spec.expiresAt` (None: it does not expire)."""
    body = build_route(view, current)
    if expires_at:
        body["spec"]["expiresAt"] = expires_at
    annotations = body["metadata"].setdefault("annotations", {})
    generation = int((current or {}).get("metadata", {}).get("generation") or 0) + 1
    annotations[ANNOTATION_CHANGED_BY] = kube.username()
    annotations[ANNOTATION_CHANGE_GENERATION] = str(generation)
    if reason:
        annotations[ANNOTATION_REASON] = reason[:REASON_MAX_LENGTH]
    else:
        annotations.pop(ANNOTATION_REASON, None)
    if schema_accepted:
        annotations[ANNOTATION_SCHEMA_ACCEPTED] = format_accepted(view.versions)
    else:
        annotations.pop(ANNOTATION_SCHEMA_ACCEPTED, None)
    if current is None:
        return route_info(kube.create(ROUTES, body))
    return route_info(kube.replace(ROUTES, body))


def set_tag(
    kube: Kube,
    flow: str,
    tag: str,
    version: int,
    exclusive: bool,
    *,
    force: bool = False,
    schema: Mapping[str, Any] | None = None,
    reason: str | None = None,
    expires_at: str | None = None,
) -> RouteInfo:
    """Route `tag` to `version`: exclusive moves it there, shared adds the version.

    When `version` is new to the route and its input schema (`schema`, else read from
    the version) rejects inputs the route's current versions accept, the move is refused
    with IncompatibleSchema — unless `force`, which records the acceptance on the route
    (`kitaru.dev/schema-accepted`) so the operator does not flag it. `reason` is
    recorded in the route history. `expires_at` (RFC 3339) is when the operator removes
    the tag; a tag command without it makes the tag permanent again.
    """
    return _change_route(
        kube,
        flow,
        tag,
        lambda before: apply_tag(before, flow, tag, version, exclusive),
        force=force,
        schemas={version: schema} if schema is not None else {},
        reason=reason,
        expires_at=expires_at,
    )


def split_route(
    kube: Kube,
    flow: str,
    tag: str,
    weights: Mapping[int, int],
    *,
    force: bool = False,
    reason: str | None = None,
    expires_at: str | None = None,
) -> RouteInfo:
    """Split `tag` between the versions of `weights` (version → percent), with the same
    schema guard, history and expiry as `set_tag` for each version new to the tag."""
    return _change_route(
        kube,
        flow,
        tag,
        lambda before: split_tag(before, flow, tag, weights),
        force=force,
        schemas={},
        reason=reason,
        expires_at=expires_at,
    )


def _change_route(
    kube: Kube,
    flow: str,
    tag: str,
    change: Callable[[RouteView | None], RouteView],
    *,
    force: bool,
    schemas: Mapping[int, Mapping[str, Any]],
    reason: str | None,
    expires_at: str | None,
) -> RouteInfo:
    """Read the route, apply the core rule `change`, guard the versions it adds, and
    compare-and-swap; start over on a race."""
    for _ in attempts():
        current = kube.get(ROUTES, route_name(flow, tag))
        before = route_view(current)
        with core_errors():
            view = change(before)
        if current is not None and view == before and _expiry(current) == expires_at:
            return route_info(current)
        findings: list[str] = []
        if current is not None and before is not None:
            for version in sorted(view.versions - before.versions):
                findings += check_tag_move(
                    kube, flow, tag, version, before.versions, schemas.get(version), force=force
                )
        try:
            return write_route(
                kube,
                view,
                current,
                reason,
                schema_accepted=bool(findings),
                expires_at=expires_at,
            )
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


def rollback_tag(kube: Kube, flow: str, tag: str, reason: str | None = None) -> RouteInfo:
    """Move `tag` back to what it routed to before its last recorded change: read the
    history and the route, then compare-and-swap the route (the operator records it)."""
    for _ in attempts():
        current = kube.get(ROUTES, route_name(flow, tag))
        history = parse_history(kube.get(HISTORIES, history_name(flow)), flow)
        if current is None and not any(c.tag == tag for c in history.changes):
            _no_such_tag(kube, flow, tag)
        with core_errors():
            target = rollback_target(history, tag, route_view(current))
        gone = [v for v in sorted(target.versions) if not _version_exists(kube, flow, v)]
        if gone:
            raise NotFound(
                f"cannot roll back tag '{tag}' of flow '{flow}' to version(s) "
                f"{format_versions(gone)}: deleted since; tag another version instead",
                kind="VersionNotFound",
            )
        try:
            # Never refused by the schema guard: it restores what callers used before.
            # The tag keeps its expiry (none once it expired: rollback restores it).
            return write_route(
                kube,
                target,
                current,
                reason or ROLLBACK_REASON,
                schema_accepted=True,
                expires_at=_expiry(current),
            )
        except (AlreadyExists, StaleObject):
            continue
    raise Conflict(f"tag '{tag}' of flow '{flow}' kept changing; try again")


def _no_such_tag(kube: Kube, flow: str, tag: str) -> NoReturn:
    """A tag with neither a route nor a recorded change: name what is missing."""
    if not kube.exists(DEPLOYMENTS, field_selector=of_flow(flow)):
        raise not_found(no_deployments(flow))
    raise not_found(tag_not_found(flow, tag))


def _version_exists(kube: Kube, flow: str, version: int) -> bool:
    return kube.get(DEPLOYMENTS, deployment_name(flow, version)) is not None


def unset_tag(
    kube: Kube, flow: str, tag: str, version: int | None, reason: str | None = None
) -> RouteInfo:
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
            return write_route(kube, remaining, current, reason, expires_at=_expiry(current))
        except StaleObject:
            continue
        except NotFound:
            continue
    raise Conflict(f"tag '{tag}' of flow '{flow}' kept changing; try again")


def set_shadow(
    kube: Kube, flow: str, tag: str, version: int | None, fraction: float | None
) -> RouteInfo:
    """Mirror `fraction` of the tag's invocations to `version` (None: stop mirroring),
    compare-and-swap on the route; its other fields stay as they are."""
    for _ in attempts():
        current = kube.get(ROUTES, route_name(flow, tag))
        if current is None:
            raise not_found(tag_not_found(flow, tag))
        body = copy.deepcopy(current)
        body.pop("status", None)
        if version is None:
            if "shadow" not in body["spec"]:
                return route_info(current)
            del body["spec"]["shadow"]
        else:
            with core_errors():
                spec = shadow_spec(route_view(current), flow, tag, version, fraction or 0)
            body["spec"]["shadow"] = spec.wire()
        try:
            return route_info(kube.replace(ROUTES, body))
        except StaleObject:
            continue
    raise Conflict(f"tag '{tag}' of flow '{flow}' kept changing; try again")


def _expiry(route: Mapping[str, Any] | None) -> str | None:
    """A route's `spec.expiresAt` as written (None: absent or no expiry)."""
    return ((route or {}).get("spec") or {}).get("expiresAt") or None


def set_limit(kube: Kube, flow: str, tag: str | None, limit: int | None) -> RouteInfo:
    """Set (None: clear) a concurrency limit: the tag's, or without a tag the flow's (on
    its `default` route). A merge patch of one field: routing and the route history are
    untouched, and a concurrent tag move keeps it (`build_route` carries it over)."""
    route_tag, field = limit_field(tag)
    name = route_name(flow, route_tag)
    if kube.get(ROUTES, name) is None:
        if not kube.exists(DEPLOYMENTS, field_selector=f"spec.flow={flow}"):
            raise not_found(no_deployments(flow))
        raise not_found(tag_not_found(flow, route_tag))
    try:
        return route_info(kube.patch(ROUTES, name, {"spec": {field: limit}}))
    except NotFound:
        raise not_found(tag_not_found(flow, route_tag)) from None
