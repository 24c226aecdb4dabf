"""The concurrency gate: admits runs under their flow's and route's limits, queues the
rest first-in first-out, and wakes the queue when a slot frees (`kitaru.core.queueing`).

All in memory, fed by what the operator already watches: the limits from the route
model (`flows`), active runs from the Job informer (a Job not finished is a slot taken —
after a restart the Job list rebuilds them before anything is dispatched), queued runs
from the invocations themselves (and a list of the `Queued` ones at start-up, so the
order survives a restart). A run admitted here is counted at once, before its Job
exists, so two reconciles cannot both take the last slot; it frees its slot when its
status is written finished (or it is deleted).

A flow with no limit and no queue costs two dict lookups per dispatch: today's path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kitaru.core.invocations import Queued
from kitaru.core.names import DEFAULT_TAG
from kitaru.core.queueing import (
    HEAD,
    ActiveRuns,
    FlowQueue,
    Key,
    Limits,
    Order,
    has_slot,
    queued_message,
    reported_position,
)

from kitaru_operator.flows import Flows

Wake = Callable[[str, str], None]  # (namespace, invocation name): reconcile it again


def queue_order(body: dict[str, Any]) -> Order:
    """Where an invocation stands in line: its creation second, then the revision it was
    created at — its resourceVersion until its first status write, kept in the status
    from then on."""
    meta = body["metadata"]
    revision = (body.get("status") or {}).get("queueRevision")
    if revision is None:
        revision = int(meta.get("resourceVersion") or 0)
    return meta["creationTimestamp"], int(revision)


def requested_tag(tag: str | None, version: int | None) -> str | None:
    """The tag a run is invoked through: its tag, `default` when it names nothing, None
    for a pinned version (as `kitaru.core.routing.Resolution.tag`)."""
    if tag is not None:
        return tag
    return DEFAULT_TAG if version is None else None


class ConcurrencyGate:
    def __init__(self, flows: Flows, wake: Wake) -> None:
        self.flows = flows
        self.wake = wake
        self.active = ActiveRuns()
        self.queues: dict[tuple[str, str], FlowQueue] = {}
        self.queued_flow: dict[Key, str] = {}  # queued run -> its flow

    def limits(self, namespace: str, flow: str, tag: str | None) -> Limits:
        state = self.flows.state(namespace, flow)
        if state is None:
            return Limits()
        default = state.routes.get(DEFAULT_TAG)
        route = state.routes.get(tag) if tag is not None else None
        return Limits(
            default.flow_max_concurrency if default else None,
            route.max_concurrency if route else None,
        )

    def admit(
        self,
        namespace: str,
        name: str,
        order: Order,
        flow: str,
        tag: str | None,
        previous_position: int | None,
    ) -> Queued | None:
        """None: start it now (its slot is taken); else its place in the queue."""
        key = (namespace, name)
        if key in self.active.runs:
            return None  # admitted earlier (a retried pass)
        limits = self.limits(namespace, flow, tag)
        queue = self.queues.get((namespace, flow))
        if limits.unlimited and queue is None:
            return None
        queue = self.enqueue(namespace, name, order, flow, tag)
        flow_limited = limits.flow is not None
        first = queue.head(tag, flow_limited) == [name]
        active_flow = self.active.of_flow(namespace, flow)
        if first and has_slot(limits, active_flow, self.active.of_route(namespace, flow, tag)):
            self._dequeue(key)
            self.active.add(key, flow, tag)
            return None
        exact = queue.position(name, flow_limited)
        position = reported_position(exact, previous_position)
        return Queued(position, queued_message(limits, tag), order[1])

    def enqueue(
        self, namespace: str, name: str, order: Order, flow: str, tag: str | None
    ) -> FlowQueue:
        queue = self.queues.setdefault((namespace, flow), FlowQueue())
        queue.add(order, name, tag)
        self.queued_flow[(namespace, name)] = flow
        return queue

    def job_running(self, key: Key, flow: str, tag: str | None) -> None:
        """The Job informer's view: a Job not finished holds a slot (after a restart, this
        is how the runs already going are counted before anything is dispatched)."""
        self.active.add(key, flow, tag)

    def release(self, key: Key) -> None:
        """A run's slot is free: the next in line may start. Called once the run's own
        status says it finished (or it is gone), not when its Job does: a reader of the
        invocations never sees the next run start while the last one still shows active."""
        found = self.active.remove(key)
        if found is not None:
            self._wake_heads(key[0], found[0], found[1], count=1)

    def forget(self, key: Key) -> None:
        """The invocation finished or was deleted (cancelled while queued, say)."""
        self._dequeue(key)
        self.release(key)

    def flow_changed(self, namespace: str, flow: str) -> None:
        """Limits may have changed: every line's head tries again."""
        queue = self.queues.get((namespace, flow))
        if queue is not None:
            for tag in list(queue.by_tag):
                self._wake_heads(namespace, flow, tag, count=1)

    def _dequeue(self, key: Key) -> None:
        flow = self.queued_flow.pop(key, None)
        if flow is None:
            return
        queue = self.queues[(key[0], flow)]
        tag = queue.remove(key[1])
        if not len(queue):
            del self.queues[(key[0], flow)]
            return
        # Everyone near the head moved up one: their positions are rewritten (exact up
        # to HEAD); the new head may start if a slot is still free.
        self._wake_heads(key[0], flow, tag, count=HEAD)

    def _wake_heads(self, namespace: str, flow: str, tag: str | None, count: int) -> None:
        queue = self.queues.get((namespace, flow))
        if queue is None:
            return
        names = dict.fromkeys(queue.head(None, True, count) + queue.head(tag, False, count))
        for name in names:
            self.wake(namespace, name)
