"""Creating a version: allocation, the first version's `default`, the high-water mark.

A deploy creates `<flow-dns>-v<N>` with N = max(existing, high-water mark) + 1 and, when
the name is taken (409) or admission refuses a reused number, tries again with the next
number — concurrent deploys never collide and never lose a version.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from kitaru.client.errors import Conflict, Rejected
from kitaru.client.kube import AlreadyExists, StaleObject
from kitaru.client.retry import attempts
from kitaru.client.rules import of_flow
from kitaru.client.tags import check_tag_move, set_tag
from kitaru.core.manifests import build_deployment, build_route, route_view
from kitaru.core.models import SourceSnapshot
from kitaru.core.names import DEFAULT_TAG, DEPLOYMENTS, ROUTES, parse_deployment_name, route_name
from kitaru.core.retention import Retention
from kitaru.core.tagging import bootstrap_default
from kitaru.core.versioning import (
    high_water_mark_patch,
    next_version,
    raised_high_water_mark,
    route_high_water_mark,
)

if TYPE_CHECKING:
    from kitaru.client.kube import Kube

RUNNER_IMAGE_ENV = "KITARU_RUNNER_IMAGE"


def default_runner_image() -> str:
    """The stack's runner image: `KITARU_RUNNER_IMAGE`, else the one matching this package."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package_version = version("kitaru-k8s")
    except PackageNotFoundError:
        package_version = "latest"
    return os.environ.get(RUNNER_IMAGE_ENV) or f"ghcr.io/kitaru-k8s/runner:{package_version}"


def create_next_version(
    kube: Kube,
    flow: str,
    *,
    entrypoint: str,
    image: str | None,
    inputs: Mapping[str, Any] | None,
    input_schema: Mapping[str, Any] | None,
    source: SourceSnapshot | None,
    git: Any,
    tag: str | None,
    exclusive: bool,
    untagged: bool,
    retention: Retention | None,
    force: bool = False,
) -> tuple[int, dict[str, Any]]:
    """Create the next version of `flow` and route it (unless `untagged`): its number and
    the body it was created from.

    The tag it takes (`default` without one) is checked first: when the new input schema
    rejects inputs the tag's current target accepts, nothing is created (IncompatibleSchema)
    unless `force`. The tag move itself checks again, in case the route moved meanwhile.
    """
    existing, default = version_state(kube, flow)
    version = next_version(existing, route_high_water_mark(default))
    if not untagged:
        _check_tag(kube, flow, tag, version, default, input_schema, force)
    for _ in attempts():
        body = build_deployment(
            flow,
            version,
            entrypoint=entrypoint,
            image=image,
            runner_image=default_runner_image(),
            inputs=inputs,
            input_schema=input_schema,
            source=source,
            git=git,
            retention=retention,
        )
        try:
            kube.create(DEPLOYMENTS, body)
            break
        except AlreadyExists:
            version += 1
        except Rejected:
            # Admission refuses a number below the high-water mark: re-read, else give up.
            existing, default = version_state(kube, flow)
            retry = next_version(existing, route_high_water_mark(default))
            if retry <= version:
                raise
            version = retry
    else:
        raise Conflict(f"could not allocate a version of flow '{flow}' after many tries")
    if not untagged:
        set_tag(kube, flow, tag or DEFAULT_TAG, version, exclusive, force=force)
    routed_default = not untagged and (tag or DEFAULT_TAG) == DEFAULT_TAG
    has_default = default is not None or routed_default
    _bootstrap_default(kube, flow, [*existing, version], version, has_default)
    record_high_water_mark(kube, flow, version)
    return version, body


def check_deploy_tag(
    kube: Kube, flow: str, tag: str | None, input_schema: Mapping[str, Any], force: bool
) -> None:
    """Before a deploy uploads anything: would the tag it takes (`default` without one)
    break its callers? Raises IncompatibleSchema unless `force`."""
    existing, default = version_state(kube, flow)
    version = next_version(existing, route_high_water_mark(default))
    _check_tag(kube, flow, tag, version, default, input_schema, force)


def _check_tag(
    kube: Kube,
    flow: str,
    tag: str | None,
    version: int,
    default: dict[str, Any] | None,
    input_schema: Mapping[str, Any] | None,
    force: bool,
) -> None:
    routed = tag or DEFAULT_TAG
    route = default if routed == DEFAULT_TAG else kube.get(ROUTES, route_name(flow, routed))
    current = route_view(route)
    if current is not None:
        check_tag_move(kube, flow, routed, version, current.versions, input_schema, force=force)


def version_state(kube: Kube, flow: str) -> tuple[builtins.list[int], dict[str, Any] | None]:
    """The flow's existing versions (from names: no bodies) and its `default` route
    (which holds the high-water mark)."""
    names = kube.items(DEPLOYMENTS, field_selector=of_flow(flow), metadata_only=True)
    existing = [
        parsed[1]
        for obj in names
        if (parsed := parse_deployment_name(obj["metadata"]["name"])) is not None
    ]
    return existing, kube.get(ROUTES, route_name(flow, DEFAULT_TAG))


def record_high_water_mark(kube: Kube, flow: str, version: int) -> None:
    """Raise the flow's mark now rather than when the operator gets to it, so a version
    deleted right after its deploy can never have its number handed out again."""
    name = route_name(flow, DEFAULT_TAG)
    for _ in attempts():
        current = kube.get(ROUTES, name)
        if current is None:
            return
        mark = raised_high_water_mark(route_high_water_mark(current), [version])
        if mark is None:
            return
        patch = high_water_mark_patch(current["metadata"]["resourceVersion"], mark)
        with suppress(StaleObject):
            kube.patch(ROUTES, name, patch)
            return


def _bootstrap_default(
    kube: Kube, flow: str, versions: builtins.list[int], new: int, has_default: bool
) -> None:
    """The core's first-version rule, applied at once (the operator applies it too;
    whoever is first wins)."""
    view = bootstrap_default(flow, versions, [new], has_default)
    if view is not None:
        with suppress(AlreadyExists):
            kube.create(ROUTES, build_route(view, high_water_mark=max(versions)))
