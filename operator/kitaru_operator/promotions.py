"""Gated promotions: FlowPromotions from their own informer, the candidate's finished runs
counted as they finish, and one evaluation per promotion that changed
(`kitaru.core.promotion.evaluate`), which may move `toTag` and writes the status.

What it costs at scale: a finished run is offered to the promotions of its flow (one
dict lookup; nothing when its flow has none waiting) and counted by name for a waiting
promotion whose candidate it ran. A promotion's count starts with one paged LIST of the
candidate's finished runs (server-side field selector on flow, version and phase), once
per promotion per operator start — never a LIST per evaluation, and nothing kept for
runs no promotion waits for. Restarts lose nothing: the phase, the frozen candidate and
the counts are in the status, the counts are recounted from that LIST and never drop
below what the status recorded, and the window's end is re-armed from the spec.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kitaru.core.backoff import Backoff
from kitaru.core.compat import format_accepted
from kitaru.core.history import (
    ANNOTATION_CHANGE_GENERATION,
    ANNOTATION_CHANGED_BY,
    ANNOTATION_REASON,
)
from kitaru.core.manifests import build_route
from kitaru.core.models import FlowPromotionSpec, FlowPromotionStatus, PromotionPhase
from kitaru.core.names import ANNOTATION_SCHEMA_ACCEPTED
from kitaru.core.promotion import FINAL, Decision, Tally, evaluate
from kitaru.core.routing import RouteView
from pydantic import TypeAdapter, ValidationError

from kitaru_operator import metrics
from kitaru_operator.events import EventRecorder, ObjectRef
from kitaru_operator.flows import FlowKey, Flows, RouteRecord, compact
from kitaru_operator.informer import Key
from kitaru_operator.kube import INVOCATION, PROMOTION, ROUTE, ApiError, AsyncKube
from kitaru_operator.objects import FinishedInvocation, Object, ObjectList, validate_json
from kitaru_operator.retention import (
    FINISHED_SELECTOR,
    FinishedRun,
    finished_run,
)

logger = logging.getLogger("kitaru_operator")
RETRY = Backoff(base=0.5, cap=30)
STATUS_WRITE_ATTEMPTS = 5
_FINISHED_PAGE: TypeAdapter[ObjectList[FinishedInvocation]] = TypeAdapter(
    ObjectList[FinishedInvocation]
)


def _time(value: str | None) -> datetime:
    if not value:
        return datetime.now(UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class PromotionRecord:
    name: str
    uid: str
    resource_version: str
    generation: int | None
    created: datetime
    spec: FlowPromotionSpec
    status: FlowPromotionStatus | None
    status_json: bytes | None

    @property
    def final(self) -> bool:
        return self.status is not None and self.status.phase in FINAL

    def ref(self, namespace: str) -> ObjectRef:
        return ObjectRef(PROMOTION.api_version, PROMOTION.kind, namespace, self.name, self.uid)


def promotion_record(obj: Object) -> PromotionRecord | None:
    try:
        spec = FlowPromotionSpec.model_validate(obj.spec)
        status = FlowPromotionStatus.model_validate(obj.status) if obj.status else None
    except ValidationError:
        return None  # the CRD's schema admits no such object; nothing to act on
    meta = obj.metadata
    return PromotionRecord(
        name=meta.name,
        uid=meta.uid,
        resource_version=meta.resource_version,
        generation=meta.generation,
        created=_time(meta.creation_timestamp),
        spec=spec,
        status=status,
        status_json=compact(obj.status) if obj.status else None,
    )


@dataclass
class Count:
    """The finished runs of one waiting promotion's candidate, by invocation name."""

    version: int
    since: float  # the promotion's creation (epoch seconds)
    runs: dict[str, bool] = field(default_factory=dict)  # name -> succeeded
    listed: bool = False

    def add(self, name: str, run: FinishedRun) -> bool:
        if run.version != self.version or run.succeeded is None or run.created_at < self.since:
            return False
        if self.runs.get(name) == run.succeeded:
            return False
        self.runs[name] = run.succeeded
        return True

    def tally(self) -> Tally:
        succeeded = sum(self.runs.values())
        return Tally(succeeded, len(self.runs) - succeeded)


class Promotions:
    """Sink of the promotion informer; counts runs; evaluates and acts on promotions."""

    def __init__(self, api: AsyncKube, flows: Flows, events: EventRecorder) -> None:
        self.api, self.flows, self.events = api, flows, events
        self.records: dict[Key, PromotionRecord] = {}
        self.waiting: dict[FlowKey, set[str]] = {}  # (namespace, flow) -> promotion names
        self.counts: dict[Key, Count] = {}
        self.timers: dict[Key, tuple[float, asyncio.TimerHandle]] = {}
        self.queue: asyncio.Queue[Key] = asyncio.Queue()
        self.queued: set[Key] = set()
        self.failures: dict[Key, int] = {}
        self.username: str | None = None

    # --- sink --------------------------------------------------------------------------

    def upsert(self, key: Key, record: PromotionRecord) -> None:
        namespace, name = key
        self.records[key] = record
        flow_key = (namespace, record.spec.flow)
        if record.final:
            self._forget(key, flow_key)
            return
        self.waiting.setdefault(flow_key, set()).add(name)
        self.mark(key)

    def delete(self, key: Key, record: PromotionRecord | None = None) -> None:
        old = self.records.pop(key, None)
        if old is not None:
            self._forget(key, (key[0], old.spec.flow))
            for other in self.waiting.get((key[0], old.spec.flow), ()):
                self.mark((key[0], other))  # one it blocked may go now

    def keys(self, namespace: str | None) -> Iterable[Key]:
        return [k for k in self.records if namespace is None or k[0] == namespace]

    def _forget(self, key: Key, flow_key: FlowKey) -> None:
        names = self.waiting.get(flow_key)
        if names is not None:
            names.discard(key[1])
            if not names:
                del self.waiting[flow_key]
        self.counts.pop(key, None)
        timer = self.timers.pop(key, None)
        if timer is not None:
            timer[1].cancel()

    def mark(self, key: Key) -> None:
        if key not in self.queued:
            self.queued.add(key)
            self.queue.put_nowait(key)

    # --- what wakes a promotion ------------------------------------------------------

    def flow_changed(self, flow_key: FlowKey) -> None:
        """A version or route of the flow changed: its waiting promotions look again."""
        for name in self.waiting.get(flow_key, ()):
            self.mark((flow_key[0], name))

    def run_finished(self, key: Key, run: FinishedRun) -> None:
        namespace, name = key
        for promotion in self.waiting.get((namespace, run.flow), ()):
            count = self.counts.get((namespace, promotion))
            if count is not None and count.add(name, run):
                self.mark((namespace, promotion))

    # --- evaluation ------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            key = await self.queue.get()
            self.queued.discard(key)
            try:
                await self.reconcile(key)
                self.failures.pop(key, None)
            except Exception as exc:  # the API's, or a bug: this promotion only, retried
                if not isinstance(exc, ApiError | aiohttp.ClientError | TimeoutError):
                    metrics.RECONCILE_ERRORS.labels("FlowPromotion").inc()
                    logger.exception("promotion %s/%s failed", *key)
                failures = self.failures[key] = self.failures.get(key, 0) + 1
                delay = RETRY.delay(failures, random.random())
                logger.warning("promotion %s/%s: %s; retrying in %.1fs", *key, exc, delay)
                asyncio.get_running_loop().call_later(delay, self.mark, key)

    async def reconcile(self, key: Key) -> None:
        namespace, name = key
        record = self.records.get(key)
        if record is None or record.final:
            return
        spec = record.spec
        state = self.flows.state(namespace, spec.flow)
        routes = state.routes if state is not None else {}
        from_route = routes.get(spec.from_tag)
        to_route = routes.get(spec.to_tag)
        previous = record.status
        candidate = previous.candidate_version if previous else None
        tally = Tally()
        if candidate is not None and not spec.cancel_requested:
            tally = await self._count(key, record, candidate)
        # toTag's versions, and the candidate — also before it is frozen: a gate decided on
        # the first pass (minRuns 0) must still check the candidate's schema
        versions = set(to_route.view.versions if to_route else ())
        versions |= (
            {candidate} if candidate else set(from_route.view.versions if from_route else ())
        )
        schemas = {
            v: d.spec().input_schema
            for v in versions
            if state is not None and (d := state.deployments.get(v)) is not None
        }
        decision = evaluate(
            name,
            spec,
            record.created,
            datetime.now(UTC),
            previous,
            from_route.view if from_route else None,
            to_route.view if to_route else None,
            tally,
            schemas,
            record.generation,
            self._pending_before(namespace, record),
        )
        if decision.move is not None:
            moved = await self._move(
                namespace, decision.move, decision.history_reason, spec.force, to_route
            )
            if not moved:
                return  # the route changed meanwhile: its event marks this again
            await self._write_final(key, record, decision.status)
            return
        await self._write_status(namespace, record, decision.status)
        self._arm_window(key, record, decision)

    def _pending_before(self, namespace: str, record: PromotionRecord) -> str | None:
        """An older promotion of the same flow and toTag that still waits."""
        mine = (record.created, record.name)
        older = [
            other.name
            for n in self.waiting.get((namespace, record.spec.flow), ())
            if (other := self.records.get((namespace, n))) is not None
            and other.name != record.name
            and other.spec.to_tag == record.spec.to_tag
            and not other.final
            and not other.spec.cancel_requested
            and (other.created, other.name) < mine
        ]
        return min(older) if older else None

    async def _count(self, key: Key, record: PromotionRecord, candidate: int) -> Tally:
        """The candidate's finished runs since the promotion: listed once, then counted
        as the finished-run informer delivers them (by name: the two overlap)."""
        count = self.counts.get(key)
        if count is None or count.version != candidate:
            count = self.counts[key] = Count(candidate, record.created.timestamp())
        if not count.listed:
            selector = (
                f"spec.flow={record.spec.flow},status.resolved.version={candidate},"
                + FINISHED_SELECTOR
            )
            token = ""
            while True:
                raw = await self.api.list_raw(
                    INVOCATION, key[0], limit=500, continue_token=token, field_selector=selector
                )
                page = validate_json(_FINISHED_PAGE, raw)
                for item in page.items:
                    run = finished_run(item)
                    if run is not None:
                        count.add(item.metadata.name, run)
                token = page.metadata.continue_
                if not token:
                    break
            count.listed = True
        return count.tally()

    async def _move(
        self,
        namespace: str,
        view: RouteView,
        reason: str,
        force: bool,
        to_route: RouteRecord | None,
    ) -> bool:
        """Route `toTag` to the candidate, exclusive, compare-and-swap on the route's
        resourceVersion; signed like a client's write so the history names the operator
        and the promotion's reason. False when the route changed meanwhile."""
        annotations: dict[str, Any] = {
            ANNOTATION_CHANGED_BY: await self._username(),
            ANNOTATION_REASON: reason,
            ANNOTATION_SCHEMA_ACCEPTED: format_accepted(view.versions) if force else None,
        }
        if to_route is None:
            annotations[ANNOTATION_CHANGE_GENERATION] = "1"
            body = build_route(view)
            body["metadata"]["namespace"] = namespace
            body["metadata"].setdefault("annotations", {}).update(
                {k: v for k, v in annotations.items() if v is not None}
            )
            return await self.api.create(ROUTE, namespace, body) is not None
        annotations[ANNOTATION_CHANGE_GENERATION] = str((to_route.generation or 0) + 1)
        patch = {
            "metadata": {"resourceVersion": to_route.resource_version, "annotations": annotations},
            # `tag` states the whole tag: promoted, it no longer expires
            "spec": {"exclusive": True, "versions": sorted(view.versions), "expiresAt": None},
        }
        return await self.api.patch(ROUTE, namespace, to_route.name, patch) is not None

    async def _username(self) -> str:
        """Who the API server says the operator is (SelfSubjectReview), once: the route
        history's `by` for a promotion's move (admission checks the claim)."""
        if self.username is None:
            _, review = await self.api.call(
                "POST",
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            )
            user = ((review or {}).get("status") or {}).get("userInfo") or {}
            self.username = str(user.get("username") or "")
        return self.username

    async def _write_status(
        self, namespace: str, record: PromotionRecord, status: FlowPromotionStatus
    ) -> bool:
        wire = status.wire()
        if record.status_json is not None and compact(wire) == record.status_json:
            return True
        body = {
            "apiVersion": PROMOTION.api_version,
            "kind": PROMOTION.kind,
            "metadata": {
                "name": record.name,
                "namespace": namespace,
                "resourceVersion": record.resource_version,
            },
            "status": wire,
        }
        if await self.api.replace(PROMOTION, body, "status") is None:
            return False  # changed meanwhile: its event marks it again
        before = record.status.phase if record.status else None
        if status.phase != before:
            self.events.post(
                record.ref(namespace),
                status.reason or str(status.phase),
                status.message or "",
                warning=status.phase == PromotionPhase.NOT_PROMOTED,
            )
        return True

    async def _write_final(
        self, key: Key, record: PromotionRecord, status: FlowPromotionStatus
    ) -> None:
        """The tag has moved: the Promoted status must be written even if the promotion
        changed meanwhile (a late cancel request cannot undo a move)."""
        for _ in range(STATUS_WRITE_ATTEMPTS):
            if await self._write_status(key[0], record, status):
                logger.info("promotion %s/%s: %s", *key, status.message)
                return
            body = await self.api.get(PROMOTION, *key)
            fresh = promotion_record(Object.model_validate(body)) if body else None
            if fresh is None or fresh.final:
                return  # deleted, or an earlier pass already wrote its outcome
            record = fresh
        raise ApiError(409, "PUT", f"{PROMOTION.plural}/{key[1]}/status", "kept changing")

    def _arm_window(self, key: Key, record: PromotionRecord, decision: Decision) -> None:
        """One timer per waiting promotion, for the end of its window."""
        if decision.final:
            return
        due = record.created.timestamp() + record.spec.after_seconds
        wait = due - datetime.now(UTC).timestamp()
        scheduled = self.timers.get(key)
        if wait <= 0 or (scheduled is not None and scheduled[0] == due):
            return
        if scheduled is not None:
            scheduled[1].cancel()
        timer = asyncio.get_running_loop().call_later(wait + 0.05, self._window_due, key)
        self.timers[key] = (due, timer)

    def _window_due(self, key: Key) -> None:
        self.timers.pop(key, None)
        self.mark(key)

    def stop(self) -> None:
        for _, timer in self.timers.values():
            timer.cancel()
        self.timers.clear()
