"""In-memory views of the cluster, maintained by kopf indexes.

Each `@kopf.index` function (registered in `handlers`) maps an object to
`{key: value}`; kopf keeps the union per key up to date from the watch streams.
Resolution and every cross-object lookup read these, never a LIST.

The indexes are mutated on kopf's event loop while handlers read them from worker
threads, so reads copy a store with a retry on concurrent modification.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from kitaru.core.names import LABEL_INVOCATION
from kitaru.core.routing import RouteView

Body = dict[str, Any]
T = TypeVar("T")

DEPLOYMENTS_BY_VERSION = "deployments_by_version"
DEPLOYMENTS_BY_FLOW = "deployments_by_flow"
ROUTES_BY_TAG = "routes_by_tag"
ROUTES_BY_FLOW = "routes_by_flow"
INVOCATIONS = "invocations"
JOBS = "jobs"
PODS = "pods"
ALL = (
    DEPLOYMENTS_BY_VERSION,
    DEPLOYMENTS_BY_FLOW,
    ROUTES_BY_TAG,
    ROUTES_BY_FLOW,
    INVOCATIONS,
    JOBS,
    PODS,
)


def plain(body: Mapping[str, Any]) -> Body:
    """A kopf body as a plain dict (kopf replaces, never mutates, the raw dicts)."""
    return {key: body[key] for key in body}


# --- index functions (keys and values) --------------------------------------------


def deployment_by_version(namespace: str | None, body: Mapping[str, Any]) -> dict[Any, Body]:
    spec = body.get("spec") or {}
    if "flow" not in spec or "version" not in spec:
        return {}
    return {(namespace, spec["flow"], int(spec["version"])): plain(body)}


def deployment_by_flow(namespace: str | None, body: Mapping[str, Any]) -> dict[Any, Body]:
    spec = body.get("spec") or {}
    return {(namespace, spec["flow"]): plain(body)} if "flow" in spec else {}


def route_by_tag(namespace: str | None, body: Mapping[str, Any]) -> dict[Any, Body]:
    spec = body.get("spec") or {}
    if "flow" not in spec or "tag" not in spec:
        return {}
    return {(namespace, spec["flow"], spec["tag"]): plain(body)}


def route_by_flow(namespace: str | None, body: Mapping[str, Any]) -> dict[Any, Body]:
    spec = body.get("spec") or {}
    return {(namespace, spec["flow"]): plain(body)} if "flow" in spec else {}


def invocation(namespace: str | None, name: str, body: Mapping[str, Any]) -> dict[Any, Body]:
    return {(namespace, name): plain(body)}


def by_invocation_label(namespace: str | None, body: Mapping[str, Any]) -> dict[Any, Body]:
    owner = ((body.get("metadata") or {}).get("labels") or {}).get(LABEL_INVOCATION)
    return {(namespace, owner): plain(body)} if owner else {}


# --- reading -------------------------------------------------------------------------


def _copy(values: Iterable[T]) -> list[T]:
    for _ in range(10):
        try:
            return list(values)
        except RuntimeError:  # the store changed size under us; read it again
            continue
    return list(values)


@dataclass
class Indexes:
    """Typed reads over kopf's indexes (passed to handlers by name)."""

    indexes: Mapping[str, Mapping[Any, Iterable[Body]]]

    def _all(self, index: str, key: Any) -> list[Body]:
        store = self.indexes[index].get(key)
        return _copy(store) if store is not None else []

    def _one(self, index: str, key: Any) -> Body | None:
        values = self._all(index, key)
        return values[0] if values else None

    def deployment(self, namespace: str, flow: str, version: int) -> Body | None:
        return self._one(DEPLOYMENTS_BY_VERSION, (namespace, flow, version))

    def deployments(self, namespace: str, flow: str) -> list[Body]:
        return self._all(DEPLOYMENTS_BY_FLOW, (namespace, flow))

    def route(self, namespace: str, flow: str, tag: str) -> Body | None:
        return self._one(ROUTES_BY_TAG, (namespace, flow, tag))

    def routes(self, namespace: str, flow: str) -> list[Body]:
        return self._all(ROUTES_BY_FLOW, (namespace, flow))

    def invocation(self, namespace: str, name: str) -> Body | None:
        return self._one(INVOCATIONS, (namespace, name))

    def invocation_keys(self) -> list[tuple[str, str]]:
        return _copy(self.indexes[INVOCATIONS].keys())

    def flow_keys(self) -> list[tuple[str, str]]:
        return _copy(self.indexes[DEPLOYMENTS_BY_FLOW].keys()) + _copy(
            self.indexes[ROUTES_BY_FLOW].keys()
        )

    def job(self, namespace: str, invocation_name: str) -> Body | None:
        return self._one(JOBS, (namespace, invocation_name))

    def pods(self, namespace: str, invocation_name: str) -> list[Body]:
        return self._all(PODS, (namespace, invocation_name))

    def lookup(self, namespace: str) -> IndexLookup:
        return IndexLookup(self, namespace)


def route_view(body: Mapping[str, Any]) -> RouteView:
    spec = body["spec"]
    return RouteView(
        flow=spec["flow"],
        tag=spec["tag"],
        exclusive=bool(spec.get("exclusive", False)),
        versions=frozenset(int(v) for v in spec.get("versions") or ()),
    )


@dataclass(frozen=True)
class IndexLookup:
    """`kitaru.core.routing.RouteLookup` over the indexes of one namespace: O(1) reads."""

    indexes: Indexes
    namespace: str

    def has_deployments(self, flow: str) -> bool:
        return bool(self.indexes.indexes[DEPLOYMENTS_BY_FLOW].get((self.namespace, flow)))

    def has_version(self, flow: str, version: int) -> bool:
        store = self.indexes.indexes[DEPLOYMENTS_BY_VERSION].get((self.namespace, flow, version))
        return bool(store)

    def route(self, flow: str, tag: str) -> RouteView | None:
        body = self.indexes.route(self.namespace, flow, tag)
        return route_view(body) if body else None
