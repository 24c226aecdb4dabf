"""FlowDeployments and FlowRoutes: a slim in-memory model per flow, and its reconcile.

Deployments and routes of one flow depend on each other (a version's tags come from
the routes, a route's readiness from the versions), so both kinds feed one model per
flow. Each change marks only what it touches dirty:

- a version added or changed: that version's status; the routes naming it (their
  readiness); whether `default` needs a bootstrap or its high-water mark a raise;
- a version deleted: the routes naming it (readiness, and shared routes drop it);
- a route changed: the versions that gained or lost the tag, and the route's status.

Marks coalesce per flow until a worker takes the flow, so a burst of events costs one
pass over what changed — never a pass over every version (10 000 of them, say). A
status is written only when the derived one differs from what the object holds, and an
Event is posted only for a real change.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kitaru.client.manifests import build_route
from kitaru.core.models import (
    FlowDeploymentSpec,
    FlowDeploymentStatus,
    FlowRouteSpec,
    FlowRouteStatus,
    TagRef,
)
from kitaru.core.names import (
    ANNOTATION_HIGHEST_VERSION,
    DEFAULT_TAG,
    flow_from_dns,
    parse_deployment_name,
)
from kitaru.core.routing import RouteView
from kitaru.core.status import derive_deployment_status, derive_route_status
from kitaru.core.tagging import apply_tag, tags_for_version
from kitaru.core.versioning import parse_high_water_mark

from kitaru_operator import metrics
from kitaru_operator.events import EventRecorder, ObjectRef
from kitaru_operator.informer import Key
from kitaru_operator.kube import DEPLOYMENT, ROUTE, ApiError, AsyncKube, Kind

logger = logging.getLogger("kitaru_operator")
FlowKey = tuple[str, str]  # (namespace, flow)
RETRY_SECONDS = (0.5, 1, 2, 5, 10, 30)


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


# --- slim records -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeploymentRecord:
    """What the operator keeps of a FlowDeployment: its spec as compact JSON (parsed on
    demand, see `spec()`), and of its status only what decides whether it is current."""

    name: str
    uid: str
    resource_version: str
    generation: int | None
    flow: str
    version: int
    deleting: bool
    spec_json: bytes
    status_json: bytes | None
    # (observedGeneration, ((tag, exclusive), ...)) of the stored status.
    status_key: tuple[int | None, tuple[tuple[str, bool], ...]] | None
    ttl_seconds_after_finished: int | None
    history_limit: int | None

    def spec(self) -> FlowDeploymentSpec:
        return parse_deployment_spec(self.spec_json)

    def ref(self, namespace: str) -> ObjectRef:
        return ObjectRef(DEPLOYMENT.api_version, DEPLOYMENT.kind, namespace, self.name, self.uid)


@functools.lru_cache(maxsize=1024)
def parse_deployment_spec(spec_json: bytes) -> FlowDeploymentSpec:
    """Parsed specs of the versions in use (bytes hash once, so hits are cheap)."""
    return FlowDeploymentSpec.model_validate_json(spec_json)


@dataclass(frozen=True, slots=True)
class RouteRecord:
    name: str
    uid: str
    resource_version: str
    generation: int | None
    view: RouteView
    high_water_mark: int
    status_json: bytes | None

    def ref(self, namespace: str) -> ObjectRef:
        return ObjectRef(ROUTE.api_version, ROUTE.kind, namespace, self.name, self.uid)


def deployment_record(obj: dict[str, Any]) -> DeploymentRecord | None:
    meta, spec = obj["metadata"], obj.get("spec") or {}
    if "flow" not in spec or "version" not in spec:
        return None
    status = obj.get("status")
    stack = spec.get("stack") or {}
    return DeploymentRecord(
        name=meta["name"],
        uid=meta.get("uid", ""),
        resource_version=meta.get("resourceVersion", ""),
        generation=meta.get("generation"),
        flow=spec["flow"],
        version=int(spec["version"]),
        deleting=bool(meta.get("deletionTimestamp")),
        spec_json=_compact(spec),
        status_json=_compact(status) if status else None,
        status_key=(
            (
                status.get("observedGeneration"),
                tuple((t["tag"], bool(t.get("exclusive"))) for t in status.get("tags") or []),
            )
            if status
            else None
        ),
        ttl_seconds_after_finished=stack.get("ttlSecondsAfterFinished"),
        history_limit=stack.get("historyLimit"),
    )


def route_record(obj: dict[str, Any]) -> RouteRecord | None:
    meta, spec = obj["metadata"], obj.get("spec") or {}
    if "flow" not in spec or "tag" not in spec:
        return None
    status = obj.get("status")
    return RouteRecord(
        name=meta["name"],
        uid=meta.get("uid", ""),
        resource_version=meta.get("resourceVersion", ""),
        generation=meta.get("generation"),
        view=RouteView(
            flow=spec["flow"],
            tag=spec["tag"],
            exclusive=bool(spec.get("exclusive")),
            versions=frozenset(int(v) for v in spec.get("versions") or ()),
        ),
        high_water_mark=parse_high_water_mark(
            (meta.get("annotations") or {}).get(ANNOTATION_HIGHEST_VERSION)
        ),
        status_json=_compact(status) if status else None,
    )


# --- the model ----------------------------------------------------------------------


@dataclass
class FlowState:
    deployments: dict[int, DeploymentRecord] = field(default_factory=dict)
    routes: dict[str, RouteRecord] = field(default_factory=dict)

    def routes_naming(self, versions: Iterable[int]) -> set[str]:
        wanted = set(versions)
        return {tag for tag, r in self.routes.items() if r.view.versions & wanted}

    def tags_of(self, version: int) -> list[TagRef]:
        return tags_for_version((r.view for r in self.routes.values()), version)

    def highest_version(self) -> int:
        default = self.routes.get(DEFAULT_TAG)
        return max(default.high_water_mark if default else 0, max(self.deployments, default=0))


@dataclass
class Dirty:
    """What changed in one flow since its last pass."""

    versions: set[int] = field(default_factory=set)
    routes: set[str] = field(default_factory=set)

    def merge(self, other: Dirty) -> None:
        self.versions |= other.versions
        self.routes |= other.routes


class Flows:
    """Every watched flow's versions and routes, and which of them changed since the last
    pass. Fed by the deployment and route informers; read by resolution."""

    def __init__(self) -> None:
        self.states: dict[FlowKey, FlowState] = {}
        self.dirty: dict[FlowKey, Dirty] = {}
        self.queue: asyncio.Queue[FlowKey] = asyncio.Queue()
        self.busy: set[FlowKey] = set()

    def state(self, namespace: str, flow: str) -> FlowState | None:
        return self.states.get((namespace, flow))

    def mark(self, key: FlowKey) -> Dirty:
        """The flow's pending marks; queues the flow once (not while a worker has it)."""
        dirty = self.dirty.get(key)
        if dirty is None:
            dirty = self.dirty[key] = Dirty()
            if key not in self.busy:
                self.queue.put_nowait(key)
        return dirty

    def take(self, key: FlowKey) -> Dirty:
        self.busy.add(key)
        return self.dirty.pop(key, Dirty())

    def done(self, key: FlowKey) -> None:
        self.busy.discard(key)
        if key in self.dirty:
            self.queue.put_nowait(key)

    # --- deployments --------------------------------------------------------------------

    def put_deployment(self, namespace: str, record: DeploymentRecord) -> None:
        key = (namespace, record.flow)
        state = self.states.setdefault(key, FlowState())
        old = state.deployments.get(record.version)
        state.deployments[record.version] = record
        dirty = self.mark(key)
        dirty.versions.add(record.version)
        if old is None or old.deleting != record.deleting:
            dirty.routes |= state.routes_naming([record.version])

    def drop_deployment(self, namespace: str, name: str) -> None:
        parsed = parse_deployment_name(name)
        if parsed is None:
            return
        flow, version = parsed
        key = (namespace, flow)
        state = self.states.get(key)
        if state is None or state.deployments.pop(version, None) is None:
            return
        self.mark(key).routes |= state.routes_naming([version])
        self._forget_if_empty(key, state)

    # --- routes ----------------------------------------------------------------------

    def put_route(self, namespace: str, record: RouteRecord) -> None:
        view = record.view
        key = (namespace, view.flow)
        state = self.states.setdefault(key, FlowState())
        old = state.routes.get(view.tag)
        state.routes[view.tag] = record
        dirty = self.mark(key)
        dirty.routes.add(view.tag)
        dirty.versions |= _tag_changes(old.view if old else None, view) & state.deployments.keys()

    def drop_route(self, namespace: str, name: str) -> None:
        dns, _, tag = name.partition(".")
        key = (namespace, flow_from_dns(dns))
        state = self.states.get(key)
        old = state.routes.pop(tag, None) if state else None
        if state is None or old is None:
            return
        self.mark(key).versions |= old.view.versions & state.deployments.keys()
        self._forget_if_empty(key, state)

    def _forget_if_empty(self, key: FlowKey, state: FlowState) -> None:
        if not state.deployments and not state.routes:
            del self.states[key]

    def names(self, namespace: str | None, routes: bool) -> Iterator[Key]:
        for (ns, _), state in list(self.states.items()):
            if namespace is None or ns == namespace:
                records: Iterable[DeploymentRecord | RouteRecord] = (
                    state.routes.values() if routes else state.deployments.values()
                )
                yield from ((ns, r.name) for r in records)


def _tag_changes(old: RouteView | None, new: RouteView | None) -> set[int]:
    """Versions whose tag list a route change alters (all of them if the mode flipped)."""
    before = old.versions if old else frozenset()
    after = new.versions if new else frozenset()
    if old is not None and new is not None and old.exclusive != new.exclusive:
        return set(before | after)
    return set(before ^ after)


class DeploymentSink:
    def __init__(self, flows: Flows) -> None:
        self.flows = flows

    def upsert(self, key: Key, record: DeploymentRecord) -> None:
        self.flows.put_deployment(key[0], record)

    def delete(self, key: Key) -> None:
        self.flows.drop_deployment(*key)

    def keys(self, namespace: str | None) -> Iterable[Key]:
        return list(self.flows.names(namespace, routes=False))


class RouteSink:
    def __init__(self, flows: Flows) -> None:
        self.flows = flows

    def upsert(self, key: Key, record: RouteRecord) -> None:
        self.flows.put_route(key[0], record)

    def delete(self, key: Key) -> None:
        self.flows.drop_route(*key)

    def keys(self, namespace: str | None) -> Iterable[Key]:
        return list(self.flows.names(namespace, routes=True))


@dataclass(frozen=True)
class FlowLookup:
    """`kitaru.core.routing.RouteLookup` over the model, for one namespace: O(1) reads."""

    flows: Flows
    namespace: str

    def has_deployments(self, flow: str) -> bool:
        state = self.flows.state(self.namespace, flow)
        return bool(state and state.deployments)

    def has_version(self, flow: str, version: int) -> bool:
        state = self.flows.state(self.namespace, flow)
        return bool(state and version in state.deployments)

    def route(self, flow: str, tag: str) -> RouteView | None:
        state = self.flows.state(self.namespace, flow)
        record = state.routes.get(tag) if state else None
        return record.view if record else None


# --- the reconcile ------------------------------------------------------------------


def _status_body(kind: Kind, namespace: str, name: str, rv: str, status: dict) -> dict:
    """A status-subresource PUT: the API server takes only `status` from it and keeps
    the rest of the stored object; resourceVersion makes it a compare-and-swap."""
    return {
        "apiVersion": kind.api_version,
        "kind": kind.kind,
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv},
        "status": status,
    }


def _is_current(record: DeploymentRecord, tags: list[TagRef]) -> bool:
    wanted = (record.generation, tuple((t.tag, t.exclusive) for t in tags))
    return record.status_key == wanted


class FlowReconciler:
    """Workers that take dirty flows off the queue and bring them up to date."""

    def __init__(
        self, api: AsyncKube, flows: Flows, events: EventRecorder, *, writes: int = 16
    ) -> None:
        self.api, self.flows, self.events = api, flows, events
        self.writes = asyncio.Semaphore(writes)
        self.failures: dict[FlowKey, int] = {}

    async def run(self, workers: int = 4) -> None:
        await asyncio.gather(*(self._worker() for _ in range(workers)))

    async def _worker(self) -> None:
        while True:
            key = await self.flows.queue.get()
            dirty = self.flows.take(key)
            try:
                with metrics.RECONCILE_SECONDS.labels("Flow").time():
                    await self.reconcile(key, dirty)
                self.failures.pop(key, None)
            except (ApiError, aiohttp.ClientError, TimeoutError) as exc:
                self._retry_later(key, dirty, exc)
            finally:
                self.flows.done(key)

    def _retry_later(self, key: FlowKey, dirty: Dirty, exc: Exception) -> None:
        failures = self.failures[key] = self.failures.get(key, 0) + 1
        delay = RETRY_SECONDS[min(failures - 1, len(RETRY_SECONDS) - 1)]
        logger.warning("reconcile of flow %s/%s failed (%s); retrying in %gs", *key, exc, delay)
        asyncio.get_running_loop().call_later(delay, lambda: self.flows.mark(key).merge(dirty))

    async def reconcile(self, key: FlowKey, dirty: Dirty) -> None:
        namespace, flow = key
        state = self.flows.state(namespace, flow)
        if state is None:
            return
        await self._default_route(namespace, flow, state, dirty)
        for tag in sorted(dirty.routes):
            await self._prune_shared_route(namespace, state, tag)
        now = datetime.now(UTC)
        await asyncio.gather(
            *(self._deployment_status(namespace, state, v, now) for v in sorted(dirty.versions))
        )
        for tag in sorted(dirty.routes):
            await self._route_status(namespace, state, tag, now)

    # --- `default`: bootstrap and high-water mark ------------------------------------

    async def _default_route(
        self, namespace: str, flow: str, state: FlowState, dirty: Dirty
    ) -> None:
        new = [
            d
            for v in dirty.versions
            if (d := state.deployments.get(v)) is not None and not d.deleting
        ]
        if not new:
            return
        default = state.routes.get(DEFAULT_TAG)
        # "The first deployment gets default": only a version this operator has not yet
        # reconciled (no status) bootstraps it, so the versions of a flow being deleted
        # on purpose (routes first) never bring it back.
        if default is None and any(d.status_json is None for d in new):
            await self._bootstrap_default(namespace, flow, state)
        elif default is not None and max(d.version for d in new) > default.high_water_mark:
            await self._raise_high_water_mark(namespace, default, state.highest_version())

    async def _bootstrap_default(self, namespace: str, flow: str, state: FlowState) -> None:
        versions = [v for v, d in state.deployments.items() if not d.deleting]
        first = min(versions)
        body = build_route(apply_tag(None, flow, DEFAULT_TAG, first, True))
        body["metadata"]["namespace"] = namespace
        body["metadata"]["annotations"] = {ANNOTATION_HIGHEST_VERSION: str(max(versions))}
        created = await self.api.create(ROUTE, namespace, body)
        if created is not None:
            meta = created["metadata"]
            ref = ObjectRef(ROUTE.api_version, ROUTE.kind, namespace, meta["name"], meta["uid"])
            self.events.post(ref, "DefaultRouteCreated", f"{DEFAULT_TAG} routes to version {first}")

    async def _raise_high_water_mark(
        self, namespace: str, default: RouteRecord, highest: int
    ) -> None:
        """Compare-and-swap the annotation up; on conflict the route's own event brings
        a newer record and the version that is still above the mark marks the flow again."""
        patch = {
            "metadata": {
                "resourceVersion": default.resource_version,
                "annotations": {ANNOTATION_HIGHEST_VERSION: str(highest)},
            }
        }
        with contextlib.suppress(ApiError):  # 409: changed meanwhile; its event re-marks
            if await self.api.patch(ROUTE, namespace, default.name, patch):
                logger.info(
                    "raised high-water mark of %s/%s to %d", namespace, default.name, highest
                )

    # --- shared routes drop deleted versions ------------------------------------------

    async def _prune_shared_route(self, namespace: str, state: FlowState, tag: str) -> None:
        """Drop versions that existed once (<= the high-water mark) and are gone from a
        shared route. Absence from the model is confirmed with a GET (a version created a
        moment ago may not have reached it yet). A version above the mark never existed:
        reported as VersionNotFound instead."""
        route = state.routes.get(tag)
        if route is None or route.view.exclusive:
            return
        absent = [v for v in route.view.versions if v not in state.deployments]
        if not absent:
            return
        highest = state.highest_version()
        gone = set()
        for version in absent:
            name = f"{route.name.partition('.')[0]}-v{version}"
            if version <= highest and await self.api.get(DEPLOYMENT, namespace, name) is None:
                gone.add(version)
        if not gone:
            return
        remaining = sorted(route.view.versions - gone)
        dropped = ", ".join(str(v) for v in sorted(gone))
        if not remaining:
            if await self.api.delete(
                ROUTE, namespace, route.name, resource_version=route.resource_version
            ):
                logger.info(
                    "deleted shared route %s/%s: its versions %s are gone",
                    namespace,
                    route.name,
                    dropped,
                )
            return
        patch = {
            "metadata": {"resourceVersion": route.resource_version},
            "spec": {"versions": remaining},
        }
        with contextlib.suppress(ApiError):  # 409: changed meanwhile; its event re-marks
            if await self.api.patch(ROUTE, namespace, route.name, patch):
                self.events.post(
                    route.ref(namespace),
                    "VersionsRemoved",
                    f"deleted version(s) {dropped} removed from the route",
                )

    # --- statuses -------------------------------------------------------------------

    async def _put_status(
        self, kind: Kind, namespace: str, name: str, rv: str, status: dict
    ) -> bool:
        async with self.writes:
            written = await self.api.replace(
                kind, _status_body(kind, namespace, name, rv, status), "status"
            )
        return written is not None  # None: changed meanwhile; its event re-marks it

    async def _deployment_status(
        self, namespace: str, state: FlowState, version: int, now: datetime
    ) -> None:
        record = state.deployments.get(version)
        if record is None or record.deleting:
            return
        tags = state.tags_of(version)
        if _is_current(record, tags):
            return
        previous = (
            FlowDeploymentStatus.model_validate_json(record.status_json)
            if record.status_json
            else None
        )
        status = derive_deployment_status(
            record.spec(), (r.view for r in state.routes.values()), previous, record.generation, now
        )
        written = await self._put_status(
            DEPLOYMENT, namespace, record.name, record.resource_version, status.wire()
        )
        before = previous.tag_summary if previous else ""
        if written and status.tag_summary != before:
            self.events.post(
                record.ref(namespace), "TagsChanged", f"tags: {status.tag_summary or '(none)'}"
            )

    async def _route_status(
        self, namespace: str, state: FlowState, tag: str, now: datetime
    ) -> None:
        route = state.routes.get(tag)
        if route is None:
            return
        live = {
            v
            for v in route.view.versions
            if (d := state.deployments.get(v)) is not None and not d.deleting
        }
        previous = (
            FlowRouteStatus.model_validate_json(route.status_json) if route.status_json else None
        )
        status = derive_route_status(
            FlowRouteSpec.model_validate(route.view.to_spec()),
            live,
            previous,
            route.generation,
            now,
        )
        wire = status.wire()
        if route.status_json is not None and _compact(wire) == route.status_json:
            return
        if not await self._put_status(ROUTE, namespace, route.name, route.resource_version, wire):
            return
        ready = status.conditions[-1] if status.conditions else None
        if ready is not None and (previous is None or previous.conditions != status.conditions):
            self.events.post(
                route.ref(namespace), ready.reason, ready.message, warning=ready.status != "True"
            )
