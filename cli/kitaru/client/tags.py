"""Tag and untag: compare-and-swap on the FlowRoute.

Read the route, apply the core rule (`apply_tag`, `remove_tag`), replace with the read
resourceVersion (or create, or delete), and start over on 409.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kitaru.client.errors import Conflict, NotFound
from kitaru.client.kube import AlreadyExists, StaleObject
from kitaru.client.records import RouteInfo, route_info
from kitaru.client.retry import attempts
from kitaru.client.rules import core_errors, not_found
from kitaru.core.manifests import build_route, route_view
from kitaru.core.names import ROUTES, route_name
from kitaru.core.routing import tag_not_found
from kitaru.core.tagging import apply_tag, remove_tag

if TYPE_CHECKING:
    from kitaru.client.kube import Kube


def set_tag(kube: Kube, flow: str, tag: str, version: int, exclusive: bool) -> RouteInfo:
    """Route `tag` to `version`: exclusive moves it there, shared adds the version."""
    for _ in attempts():
        current = kube.get(ROUTES, route_name(flow, tag))
        with core_errors():
            view = apply_tag(route_view(current), flow, tag, version, exclusive)
        try:
            if current is None:
                return route_info(kube.create(ROUTES, build_route(view)))
            if view == route_view(current):
                return route_info(current)
            return route_info(kube.replace(ROUTES, build_route(view, current)))
        except (AlreadyExists, StaleObject):
            continue
    raise Conflict(f"tag '{tag}' of flow '{flow}' kept changing; try again")


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
