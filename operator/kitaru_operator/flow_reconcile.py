"""The reconcile of one flow's versions and routes, from the model in `flows`.

A worker takes a dirty flow off the queue and does only what its marks ask:

- bootstrap the `default` route (lowest version) when a version this operator has not
  reconciled yet exists and no `default` does — a create with a deterministic name;
- record the flow's high-water mark in the status of `default` (only the operator
  writes status, so admission can trust it; the client's annotation is a hint);
- drop deleted versions from shared routes (delete a shared route left empty);
- delete a route whose `spec.expiresAt` has come (compare-and-swap), or keep one timer
  per expiring route that marks it again then;
- write each marked status that differs from the stored one, via the status
  subresource with resourceVersion; post an Event for each real change.

A pass that fails is retried with backoff; a write that loses a compare-and-swap needs
no retry: the newer object's event marks it again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp
from kitaru.core.backoff import Backoff
from kitaru.core.compat import check_route_schema
from kitaru.core.expiry import EXPIRED_BY, EXPIRED_REASON
from kitaru.core.history import (
    BY_OPERATOR,
    DEFAULT_HISTORY_LIMIT,
    Attribution,
    build_history,
    format_time,
    history_name,
    parse_history,
    record_change,
)
from kitaru.core.manifests import build_route
from kitaru.core.models import (
    FlowDeploymentStatus,
    FlowRouteStatus,
    RouteChangeAction,
    ShadowSummary,
    TagRef,
)
from kitaru.core.names import DEFAULT_TAG
from kitaru.core.routing import RouteView
from kitaru.core.status import SCHEMA_COMPATIBLE, derive_deployment_status, derive_route_status
from kitaru.core.tagging import bootstrap_default
from kitaru.core.versioning import raised_high_water_mark

from kitaru_operator import metrics
from kitaru_operator.events import EventRecorder, ObjectRef
from kitaru_operator.flows import (
    DeploymentRecord,
    Dirty,
    FlowKey,
    Flows,
    FlowState,
    compact,
)
from kitaru_operator.kube import DEPLOYMENT, HISTORY, ROUTE, ApiError, AsyncKube, Kind

logger = logging.getLogger("kitaru_operator")
RECONCILE_RETRY = Backoff(base=0.5, cap=30)
# (namespace, flow, tag, shadow version) -> how that route's shadow runs compare.
ShadowSummaryOf = Callable[[str, str, str, int], ShadowSummary]
HISTORY_WRITE_ATTEMPTS = 5  # then the pass fails and is retried with backoff


def _status_body(kind: Kind, namespace: str, name: str, rv: str, status: dict) -> dict:
    """A status-subresource PUT: the API server takes only `status` from it and keeps
    the rest of the stored object; resourceVersion makes it a compare-and-swap."""
    return {
        "apiVersion": kind.api_version,
        "kind": kind.kind,
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv},
        "status": status,
    }


def status_is_current(record: DeploymentRecord, tags: list[TagRef]) -> bool:
    wanted = (record.generation, tuple((t.tag, t.exclusive, t.weight) for t in tags))
    return record.status_key == wanted


class FlowReconciler:
    """Workers that take dirty flows off the queue and bring them up to date."""

    def __init__(
        self,
        api: AsyncKube,
        flows: Flows,
        events: EventRecorder,
        *,
        concurrency: int = 16,
        route_history_limit: int = DEFAULT_HISTORY_LIMIT,
        shadow_summary: ShadowSummaryOf | None = None,
        default_runner_image: str | None = None,
    ) -> None:
        self.api, self.flows, self.events = api, flows, events
        self.default_runner_image = default_runner_image
        self.shadow_summary = shadow_summary
        self.concurrency = concurrency
        self.route_history_limit = route_history_limit
        self.failures: dict[FlowKey, int] = {}
        # One timer per expiring route, keyed (namespace, flow, tag): (expiresAt, timer).
        # Only routes with an expiry cost anything; none is found by a scan.
        self.expiry_timers: dict[tuple[str, str, str], tuple[float, asyncio.TimerHandle]] = {}

    async def run(self, workers: int = 4) -> None:
        try:
            await asyncio.gather(*(self._worker() for _ in range(workers)))
        finally:  # stopping: no expiry may mark a flow after the workers are gone
            for _, timer in self.expiry_timers.values():
                timer.cancel()
            self.expiry_timers.clear()

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
            except Exception as exc:  # a bug, or a body no rule foresaw: this flow only
                metrics.RECONCILE_ERRORS.labels("Flow").inc()
                logger.exception("reconcile of flow %s/%s failed", *key)
                self._retry_later(key, dirty, exc)
            finally:
                self.flows.done(key)

    def _retry_later(self, key: FlowKey, dirty: Dirty, exc: Exception) -> None:
        failures = self.failures[key] = self.failures.get(key, 0) + 1
        delay = RECONCILE_RETRY.delay(failures, random.random())
        logger.warning("reconcile of flow %s/%s failed (%s); retrying in %.1fs", *key, exc, delay)
        asyncio.get_running_loop().call_later(delay, lambda: self.flows.mark(key).merge(dirty))

    async def reconcile(self, key: FlowKey, dirty: Dirty) -> None:
        namespace, flow = key
        state = self.flows.state(namespace, flow)
        if state is None:
            return
        await self._record_history(namespace, flow, state, dirty)
        await self._default_route(namespace, flow, state, dirty)
        for tag in sorted(dirty.routes):
            await self._prune_shared_route(namespace, state, tag)
        now = datetime.now(UTC)
        versions = iter(sorted(dirty.versions))

        async def write_statuses() -> None:
            for version in versions:  # shared: each version is taken by one writer
                await self._deployment_status(namespace, state, version, now)

        # A bounded number of writers, not a task per version: with 10 000 new versions,
        # 10 000 derived statuses waiting for the API at once would be the memory peak.
        await asyncio.gather(*(write_statuses() for _ in range(self.concurrency)))
        for tag in sorted(dirty.routes):
            await self._route_status(namespace, state, tag, now)
        for tag in sorted(dirty.routes):
            await self._expire_route(namespace, flow, state, tag)

    # --- route history ------------------------------------------------------------

    async def _record_history(
        self, namespace: str, flow: str, state: FlowState, dirty: Dirty
    ) -> None:
        """Append the flow's route changes to its FlowHistory (compare-and-swap), before
        the routes' statuses: a route whose status.observedGeneration is its generation
        is recorded, so an operator restart records only what changed while it was away.
        O(changed routes): one GET and one write per pass that changed a route."""
        now = datetime.now(UTC)

        def deleted(tag: str) -> Attribution:
            """Who deleted a route: the operator at its expiry, else unknown."""
            expired = state.expired_routes.get(tag)
            return expired[1] if expired else Attribution(at=format_time(now))

        changed: list[tuple[str, RouteView | None, Attribution]] = []
        for tag in sorted(dirty.routes):
            route = state.routes.get(tag)
            if route is None:
                if tag in state.deleted_routes:
                    changed.append((tag, None, deleted(tag)))
            elif route.observed_generation != route.generation:
                changed.append((tag, route.view, route.who))
        if not changed:
            return
        name = history_name(flow)
        for _ in range(HISTORY_WRITE_ATTEMPTS):
            current = await self.api.get(HISTORY, namespace, name)
            history = parse_history(current, flow)
            recorded = [
                change
                for tag, view, who in changed
                if (change := record_change(history, tag, view, who, self.route_history_limit))
            ]
            # Routes the history has and the model does not: deleted while no operator ran,
            # or since this pass began (an expired route's delete event can come now).
            for tag in [r.tag for r in history.routes if r.tag not in state.routes]:
                gone = deleted(tag)
                if change := record_change(history, tag, None, gone, self.route_history_limit):
                    recorded.append(change)
            if not recorded:
                break
            body = build_history(flow, history, current)
            body["metadata"]["namespace"] = namespace
            written = await (
                self.api.replace(HISTORY, body)
                if current is not None
                else self.api.create(HISTORY, namespace, body)
            )
            if written is not None:
                for change in recorded:
                    if change.action == RouteChangeAction.DELETED:
                        state.expired_routes.pop(change.tag, None)
                    logger.info(
                        "route history %s/%s #%d: %s %s %s -> %s by %s",
                        namespace, flow, change.seq, change.tag, change.action,
                        change.from_versions, change.to_versions, change.by or "?",
                    )  # fmt: skip
                break
        else:
            raise ApiError(409, "PUT", f"{HISTORY.plural}/{name}", "kept changing")
        state.deleted_routes.clear()
        self.flows.forget_if_empty((namespace, flow))

    # --- expiring tags ------------------------------------------------------------

    async def _expire_route(self, namespace: str, flow: str, state: FlowState, tag: str) -> None:
        """Delete the route once its `spec.expiresAt` has come; until then keep one timer
        that marks it again at that time. The delete is guarded by the resourceVersion
        the pass saw: a route re-tagged meanwhile is not deleted (its event marks it
        again). The deletion is recorded in the next pass, by the operator, as expired."""
        key = (namespace, flow, tag)
        route = state.routes.get(tag)
        expires = route.expires_at if route is not None else None
        scheduled = self.expiry_timers.get(key)
        if scheduled is not None and scheduled[0] != expires:
            scheduled[1].cancel()
            del self.expiry_timers[key]
            scheduled = None
        if route is None or expires is None or route.view.tag == DEFAULT_TAG:
            return  # CEL refuses an expiry on default; never delete it here either
        wait = expires - time.time()
        if wait > 0:
            if scheduled is None:
                timer = asyncio.get_running_loop().call_later(wait, self._expiry_due, key)
                self.expiry_timers[key] = (expires, timer)
            return
        if await self.api.delete(
            ROUTE, namespace, route.name, resource_version=route.resource_version
        ):
            state.expired_routes[tag] = (
                route.uid,
                Attribution(
                    at=format_time(datetime.fromtimestamp(expires, UTC)),
                    by=EXPIRED_BY,
                    by_source=BY_OPERATOR,
                    reason=EXPIRED_REASON,
                    generation=route.generation,
                ),
            )
            logger.info("route %s/%s expired: deleted", namespace, route.name)

    def _expiry_due(self, key: tuple[str, str, str]) -> None:
        self.expiry_timers.pop(key, None)
        namespace, flow, tag = key
        self.flows.mark((namespace, flow)).routes.add(tag)

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
        # New to this operator: a version it has not reconciled yet (no status).
        unreconciled = [d.version for d in new if d.status_json is None]
        if default is None:
            await self._bootstrap_default(namespace, flow, state, unreconciled)
        elif raised_high_water_mark(default.recorded_high_water_mark, (d.version for d in new)):
            dirty.routes.add(DEFAULT_TAG)  # its status records the new high-water mark

    async def _bootstrap_default(
        self, namespace: str, flow: str, state: FlowState, unreconciled: list[int]
    ) -> None:
        versions = [v for v, d in state.deployments.items() if not d.deleting]
        view = bootstrap_default(flow, versions, unreconciled, has_default=False)
        if view is None:
            return
        body = build_route(view, high_water_mark=max(versions))
        body["metadata"]["namespace"] = namespace
        created = await self.api.create(ROUTE, namespace, body)
        if created is not None:
            meta = created["metadata"]
            ref = ObjectRef(ROUTE.api_version, ROUTE.kind, namespace, meta["name"], meta["uid"])
            (first,) = view.versions
            self.events.post(ref, "DefaultRouteCreated", f"{DEFAULT_TAG} routes to version {first}")

    # --- shared routes drop deleted versions ------------------------------------------

    async def _prune_shared_route(self, namespace: str, state: FlowState, tag: str) -> None:
        """Drop versions that existed once (<= the high-water mark) and are gone from a
        shared route. Absence from the model is confirmed with a GET (a version created a
        moment ago may not have reached it yet). A version above the mark never existed:
        reported as VersionNotFound instead. So is a gone version of a route whose versions
        a GitOps controller applies: taking it out would fight the controller on every
        sync, and the failing status tells its user what to fix in git."""
        route = state.routes.get(tag)
        if route is None or route.view.exclusive or route.versions_applied:
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
        # None: changed meanwhile (409); its event re-marks the flow.
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
        if status_is_current(record, tags):
            return
        previous = (
            FlowDeploymentStatus.model_validate_json(record.status_json)
            if record.status_json
            else None
        )
        status = derive_deployment_status(
            record.spec(),
            (r.view for r in state.routes.values()),
            previous,
            record.generation,
            now,
            self.default_runner_image,
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
        baseline = previous.schema_baseline if previous else None
        schemas = {
            v: d.spec().input_schema
            for v in route.view.versions | frozenset(baseline or ())
            if (d := state.deployments.get(v)) is not None and not d.deleting
        }
        schema = check_route_schema(
            route.view.flow,
            route.view.tag,
            route.name,
            route.view.versions,
            baseline,
            schemas,
            route.schema_accepted,
        )
        shadow = (
            self.shadow_summary(namespace, route.view.flow, route.view.tag, route.shadow[0])
            if route.shadow is not None and self.shadow_summary is not None
            else None
        )
        status = derive_route_status(
            route.view.to_spec(),
            live,
            previous,
            route.generation,
            now,
            schema,
            shadow,
            highest_version=state.highest_version() if route.view.tag == DEFAULT_TAG else None,
        )
        wire = status.wire()
        if route.status_json is not None and compact(wire) == route.status_json:
            return
        if not await self._put_status(ROUTE, namespace, route.name, route.resource_version, wire):
            return
        before = {c.type: c for c in previous.conditions} if previous else {}
        for condition in status.conditions:
            old = before.get(condition.type)
            if old is not None and (old.status, old.reason, old.message) == (
                condition.status,
                condition.reason,
                condition.message,
            ):
                continue
            if old is None and condition.type == SCHEMA_COMPATIBLE and condition.status == "True":
                continue  # a route's first verdict, nothing moved: not news
            self.events.post(
                route.ref(namespace),
                condition.reason,
                condition.message,
                warning=condition.status != "True",
            )
