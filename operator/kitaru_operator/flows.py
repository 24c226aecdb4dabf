"""FlowDeployments and FlowRoutes: a slim in-memory model per flow, and its reconcile.

Deployments and routes of one flow depend on each other (a version's tags come from
the routes, a route's readiness from the versions), so both kinds feed one model per
flow. Each change marks only what it touches dirty:

- a version added or changed: that version's status; the routes naming it (their
  readiness); whether `default` needs a bootstrap or its high-water mark a raise;
- a version deleted: the routes naming it (readiness, and shared routes drop it);
- a route changed: the versions that gained or lost the tag, and the route's status.

Marks coalesce per flow until a worker takes the flow (`flow_reconcile`), so a burst of
events costs one pass over what changed — never a pass over every version (10 000 of
them, say). Resolution reads the same model (`FlowLookup`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kitaru.core.compat import parse_accepted
from kitaru.core.expiry import parse_expiry
from kitaru.core.history import Attribution, attribution
from kitaru.core.models import (
    FlowDeploymentSpec,
    TagRef,
)
from kitaru.core.names import (
    ANNOTATION_HIGHEST_VERSION,
    ANNOTATION_SCHEMA_ACCEPTED,
    DEFAULT_TAG,
    flow_from_dns,
    parse_deployment_name,
)
from kitaru.core.routing import RouteView, split_of
from kitaru.core.tagging import tags_for_version
from kitaru.core.versioning import parse_high_water_mark
from pydantic import TypeAdapter

from kitaru_operator.events import ObjectRef
from kitaru_operator.informer import Key
from kitaru_operator.kube import DEPLOYMENT, ROUTE
from kitaru_operator.objects import Object, RouteObject, validate_json

logger = logging.getLogger("kitaru_operator")
FlowKey = tuple[str, str]  # (namespace, flow)
_DEPLOYMENT_SPEC = TypeAdapter(FlowDeploymentSpec)


def compact(value: Any) -> bytes:
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
    status_key: tuple[int | None, tuple[tuple[str, bool, int | None], ...]] | None
    ttl_seconds_after_finished: int | None
    history_limit: int | None

    def spec(self) -> FlowDeploymentSpec:
        return parse_deployment_spec(self.spec_json)

    def ref(self, namespace: str) -> ObjectRef:
        return ObjectRef(DEPLOYMENT.api_version, DEPLOYMENT.kind, namespace, self.name, self.uid)


@functools.lru_cache(maxsize=256)
def parse_deployment_spec(spec_json: bytes) -> FlowDeploymentSpec:
    """Parsed specs of the versions in use (bytes hash once, so hits are cheap)."""
    return validate_json(_DEPLOYMENT_SPEC, spec_json)


@dataclass(frozen=True, slots=True)
class RouteRecord:
    name: str
    uid: str
    resource_version: str
    generation: int | None
    view: RouteView
    high_water_mark: int  # the client's annotation (producers can edit it)
    status_json: bytes | None
    # Who/when/why of the write that made this generation, for the route history.
    who: Attribution = field(default_factory=lambda: Attribution(at=""))
    # status.observedGeneration: a generation the operator has reconciled (and so
    # recorded in the flow's history, which it writes before the status).
    observed_generation: int | None = None
    # spec.versions is applied by someone (server-side apply, e.g. Flux or Argo CD): the
    # operator does not take deleted versions out of it, it reports them instead.
    versions_applied: bool = False
    # The kitaru.dev/schema-accepted annotation: versions routed here on purpose.
    schema_accepted: frozenset[int] | None = None
    # status.highestVersion: the high-water mark this operator recorded (on `default`).
    recorded_high_water_mark: int = 0
    # spec.expiresAt as a Unix time: when the operator deletes the route (None: never).
    expires_at: float | None = None
    # spec.shadow: (candidate version, fraction of invocations mirrored to it).
    shadow: tuple[int, float] | None = None
    # Concurrency limits (kitaru.core.queueing): runs through this tag; runs of the flow
    # (on `default` only).
    max_concurrency: int | None = None
    flow_max_concurrency: int | None = None

    def ref(self, namespace: str) -> ObjectRef:
        return ObjectRef(ROUTE.api_version, ROUTE.kind, namespace, self.name, self.uid)


def deployment_record(obj: Object) -> DeploymentRecord | None:
    meta, spec, status = obj.metadata, obj.spec, obj.status
    if "flow" not in spec or "version" not in spec:
        return None
    stack = spec.get("stack") or {}
    return DeploymentRecord(
        name=meta.name,
        uid=meta.uid,
        resource_version=meta.resource_version,
        generation=meta.generation,
        flow=sys.intern(spec["flow"]),
        version=int(spec["version"]),
        deleting=meta.deletion_timestamp is not None,
        spec_json=compact(spec),
        status_json=compact(status) if status else None,
        status_key=(
            (
                status.get("observedGeneration"),
                tuple(
                    (t["tag"], bool(t.get("exclusive")), t.get("weight"))
                    for t in status.get("tags") or []
                ),
            )
            if status
            else None
        ),
        ttl_seconds_after_finished=stack.get("ttlSecondsAfterFinished"),
        history_limit=stack.get("historyLimit"),
    )


def _recorded_mark(status: dict[str, Any] | None) -> int:
    mark = (status or {}).get("highestVersion")
    return mark if isinstance(mark, int) else 0


def route_record(obj: RouteObject) -> RouteRecord | None:
    meta, spec, status = obj.metadata, obj.spec, obj.status
    if "flow" not in spec or "tag" not in spec:
        return None
    return RouteRecord(
        name=meta.name,
        uid=meta.uid,
        resource_version=meta.resource_version,
        generation=meta.generation,
        view=RouteView(
            flow=sys.intern(spec["flow"]),
            tag=spec["tag"],
            exclusive=bool(spec.get("exclusive")),
            versions=frozenset(int(v) for v in spec.get("versions") or ()),
            split=split_of(spec.get("split")),
        ),
        shadow=_shadow(spec.get("shadow")),
        high_water_mark=parse_high_water_mark(meta.annotations.get(ANNOTATION_HIGHEST_VERSION)),
        status_json=compact(status) if status else None,
        recorded_high_water_mark=_recorded_mark(status),
        who=attribution(
            {
                "annotations": meta.annotations,
                "generation": meta.generation,
                "managedFields": [
                    {"manager": e.manager, "time": e.time, "fieldsV1": e.fields_v1}
                    for e in meta.managed_fields
                ],
            },
            datetime.now(UTC),
        ),
        observed_generation=(status or {}).get("observedGeneration"),
        versions_applied=any(
            entry.operation == "Apply" and "f:versions" in entry.fields_v1.get("f:spec", {})
            for entry in meta.managed_fields
        ),
        schema_accepted=parse_accepted(meta.annotations.get(ANNOTATION_SCHEMA_ACCEPTED)),
        expires_at=(at.timestamp() if (at := parse_expiry(spec.get("expiresAt"))) else None),
        max_concurrency=spec.get("maxConcurrency"),
        flow_max_concurrency=spec.get("flowMaxConcurrency"),
    )


# --- the model ----------------------------------------------------------------------


@dataclass
class FlowState:
    deployments: dict[int, DeploymentRecord] = field(default_factory=dict)
    routes: dict[str, RouteRecord] = field(default_factory=dict)
    # Routes deleted since the last pass: their deletion is still to be recorded.
    deleted_routes: set[str] = field(default_factory=set)
    # Routes this operator deleted at their expiry, by tag: the deleted route's uid and
    # who/why of that deletion's record.
    expired_routes: dict[str, tuple[str, Attribution]] = field(default_factory=dict)

    def routes_naming(self, versions: Iterable[int]) -> set[str]:
        wanted = set(versions)
        return {tag for tag, r in self.routes.items() if r.view.versions & wanted}

    def tags_of(self, version: int) -> list[TagRef]:
        return tags_for_version((r.view for r in self.routes.values()), version)

    def highest_version(self) -> int:
        default = self.routes.get(DEFAULT_TAG)
        marks = (default.high_water_mark, default.recorded_high_water_mark) if default else ()
        return max(*marks, max(self.deployments, default=0), 0)


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

    def __init__(self, on_change: Callable[[FlowKey], None] | None = None) -> None:
        self.states: dict[FlowKey, FlowState] = {}
        self.dirty: dict[FlowKey, Dirty] = {}
        self.queue: asyncio.Queue[FlowKey] = asyncio.Queue()
        self.busy: set[FlowKey] = set()
        # Called after each change of a flow (invocations waiting for it try again).
        self.on_change = on_change

    def state(self, namespace: str, flow: str) -> FlowState | None:
        return self.states.get((namespace, flow))

    def mark(self, key: FlowKey) -> Dirty:
        """The flow's pending marks; queues the flow once (not while a worker has it)."""
        if self.on_change is not None:
            self.on_change(key)
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
        state.deleted_routes.discard(view.tag)
        expired = state.expired_routes.get(view.tag)
        # A late event of the expired route itself (its last status write) changes
        # nothing; only a route created again under the tag is no longer the expired one.
        if expired is not None and expired[0] != record.uid:
            del state.expired_routes[view.tag]
        dirty = self.mark(key)
        dirty.routes.add(view.tag)
        dirty.versions |= tag_changes(old.view if old else None, view) & state.deployments.keys()

    def drop_route(self, namespace: str, name: str) -> None:
        dns, _, tag = name.partition(".")
        key = (namespace, flow_from_dns(dns))
        state = self.states.get(key)
        old = state.routes.pop(tag, None) if state else None
        if state is None or old is None:
            return
        dirty = self.mark(key)
        dirty.versions |= old.view.versions & state.deployments.keys()
        dirty.routes.add(tag)  # the deletion is recorded in the flow's history
        state.deleted_routes.add(tag)

    def forget_if_empty(self, key: FlowKey) -> None:
        state = self.states.get(key)
        if state is not None:
            self._forget_if_empty(key, state)

    def _forget_if_empty(self, key: FlowKey, state: FlowState) -> None:
        if not state.deployments and not state.routes and not state.deleted_routes:
            del self.states[key]

    def names(self, namespace: str | None, routes: bool) -> Iterator[Key]:
        for (ns, _), state in list(self.states.items()):
            if namespace is None or ns == namespace:
                records: Iterable[DeploymentRecord | RouteRecord] = (
                    state.routes.values() if routes else state.deployments.values()
                )
                yield from ((ns, r.name) for r in records)


def _shadow(shadow: dict[str, Any] | None) -> tuple[int, float] | None:
    if not shadow or "version" not in shadow:
        return None
    return int(shadow["version"]), float(shadow.get("fraction") or 0)


def tag_changes(old: RouteView | None, new: RouteView | None) -> set[int]:
    """Versions whose tag list a route change alters (all of them if the mode or the
    weights changed)."""
    before = old.versions if old else frozenset()
    after = new.versions if new else frozenset()
    if (
        old is not None
        and new is not None
        and (old.exclusive, old.split) != (new.exclusive, new.split)
    ):
        return set(before | after)
    return set(before ^ after)


class DeploymentSink:
    def __init__(self, flows: Flows) -> None:
        self.flows = flows

    def upsert(self, key: Key, record: DeploymentRecord) -> None:
        self.flows.put_deployment(key[0], record)

    def delete(self, key: Key, record: DeploymentRecord | None = None) -> None:
        self.flows.drop_deployment(*key)

    def keys(self, namespace: str | None) -> Iterable[Key]:
        return list(self.flows.names(namespace, routes=False))


class RouteSink:
    def __init__(self, flows: Flows) -> None:
        self.flows = flows

    def upsert(self, key: Key, record: RouteRecord) -> None:
        self.flows.put_route(key[0], record)

    def delete(self, key: Key, record: RouteRecord | None = None) -> None:
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

    def shadow(self, flow: str, tag: str) -> tuple[int, float] | None:
        """The route's shadow (version, fraction) when its candidate version exists."""
        state = self.flows.state(self.namespace, flow)
        if state is None or (record := state.routes.get(tag)) is None or not record.shadow:
            return None
        return record.shadow if record.shadow[0] in state.deployments else None
