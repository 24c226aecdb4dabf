"""Status derivation: whole status objects computed from spec and observed state.

The operator writes the result once per pass through the status subresource;
with unchanged inputs the output is identical, so nothing flaps.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from datetime import datetime

from kitaru.core.compat import SchemaCheck
from kitaru.core.conditions import set_condition
from kitaru.core.models import (
    ConditionStatus,
    FlowDeploymentSpec,
    FlowDeploymentStatus,
    FlowRouteSpec,
    FlowRouteStatus,
    RouteMode,
    ShadowSummary,
)
from kitaru.core.names import DEFAULT_TAG, snapshot_name
from kitaru.core.routing import RouteView, format_split, format_versions, split_from
from kitaru.core.tagging import tags_for_version

READY = "Ready"
SCHEMA_COMPATIBLE = "SchemaCompatible"


def runner_image(spec: FlowDeploymentSpec, default: str | None = None) -> str | None:
    """The image a run of this version uses: the snapshot's, else the stack's runner image
    (a stack's always wins), else `default`, the operator's (chart value `runner.image`)."""
    return spec.snapshot.image or spec.stack.runner_image or default or None


def derive_deployment_status(
    spec: FlowDeploymentSpec,
    routes: Iterable[RouteView],
    previous: FlowDeploymentStatus | None,
    generation: int | None,
    now: datetime | str,
    default_runner_image: str | None = None,
) -> FlowDeploymentStatus:
    """Status of a FlowDeployment: Ready when runnable, and the tags routed to it."""
    tags = tags_for_version((r for r in routes if r.flow == spec.flow), spec.version)
    name = snapshot_name(spec.flow, spec.version)
    image = runner_image(spec, default_runner_image)
    if image:
        ready, reason, message = True, "Runnable", f"{name} runs image {image}"
    else:
        ready, reason, message = (
            False,
            "NotRunnable",
            "no runnable snapshot: set spec.snapshot.image (kitaru deploy --image IMAGE) "
            "or spec.stack.runnerImage",
        )
    conditions = set_condition(
        previous.conditions if previous else [], READY, ready, reason, message, now, generation
    )
    return FlowDeploymentStatus(
        conditions=conditions,
        tags=tags,
        tag_summary=",".join(
            ref.tag if ref.weight is None else f"{ref.tag}({ref.weight}%)" for ref in tags
        ),
        snapshot_name=name,
        observed_generation=generation,
    )


def derive_route_status(
    spec: FlowRouteSpec,
    existing_versions: Set[int],
    previous: FlowRouteStatus | None,
    generation: int | None,
    now: datetime | str,
    schema: SchemaCheck | None = None,
    shadow: ShadowSummary | None = None,
    highest_version: int | None = None,
) -> FlowRouteStatus:
    """Status of a FlowRoute: Ready, or VersionNotFound naming the missing versions; and
    with `schema` (see `compat.check_route_schema`) SchemaCompatible and its baseline.
    On `default`, `highest_version` (the flow's highest version seen) raises the recorded
    high-water mark; it never lowers it."""
    routed = set(spec.versions)
    missing = routed - existing_versions
    route = f"tag '{spec.tag}' of flow '{spec.flow}'"
    if missing:
        ready, reason = False, "VersionNotFound"
        message = (
            f"{route} routes to missing version(s) {format_versions(missing)}; move it with: "
            f"kitaru flow tag {spec.flow} {spec.tag} --version N"
            + (" --exclusive" if spec.exclusive else "")
        )
    elif spec.split:
        weights = format_split(split_from(spec.split))
        ready, reason = True, "Split"
        message = f"{route} splits its invocations by weight: {weights} (version=percent)"
    elif len(routed) == 1:
        ready, reason, message = True, "Resolved", f"{route} routes to version {spec.versions[0]}"
    else:
        ready, reason = True, "Shared"
        message = (
            f"{route} routes to versions {format_versions(routed)}; "
            "invoke one of them with --version"
        )
    conditions = set_condition(
        previous.conditions if previous else [], READY, ready, reason, message, now, generation
    )
    baseline = previous.schema_baseline if previous else None
    if schema is not None:
        status = ConditionStatus.UNKNOWN if schema.status is None else schema.status
        conditions = set_condition(
            conditions, SCHEMA_COMPATIBLE, status, schema.reason, schema.message, now, generation
        )
        baseline = list(schema.baseline)
    return FlowRouteStatus(
        conditions=conditions,
        mode=route_mode(spec),
        resolved_version=spec.versions[0] if len(routed) == 1 and not missing else None,
        split_summary=format_split(split_from(spec.split or ())) or None,
        shadow=shadow,
        schema_baseline=baseline,
        highest_version=_high_water_mark(spec, previous, highest_version),
        observed_generation=generation,
    )


def _high_water_mark(
    spec: FlowRouteSpec, previous: FlowRouteStatus | None, seen: int | None
) -> int | None:
    if spec.tag != DEFAULT_TAG:
        return None
    recorded = max((previous.highest_version or 0) if previous else 0, seen or 0)
    return recorded or None


def route_mode(spec: FlowRouteSpec) -> RouteMode:
    if spec.split:
        return RouteMode.WEIGHTED
    return RouteMode.EXCLUSIVE if spec.exclusive else RouteMode.SHARED
