"""Retention of finished runs: delete each after its time to live, or once its flow has
its history limit of newer finished runs (`kitaru.core.retention`).

Finished invocations come from their own informer (a field selector on `status.phase`)
and are kept per flow in a `FlowHistory`: a finish time and a name per run, nothing
else. A run kept forever is not kept at all. Work follows change: a new finished run
checks its flow, and a timer sleeps until the earliest TTL. Deletions are paced so that
a backlog (say, the first start on a namespace of 100 000 old runs) never crowds out
dispatch; the Job and pods go with the invocation through their owner references.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import aiohttp
from kitaru.core.names import ANNOTATION_CREATED_BY
from kitaru.core.retention import FlowHistory, Retention, effective_retention

from kitaru_operator.informer import Key
from kitaru_operator.kube import INVOCATION, ApiError, AsyncKube
from kitaru_operator.objects import FinishedInvocation

logger = logging.getLogger("kitaru_operator")
FINISHED_SELECTOR = "status.phase!=,status.phase!=Pending,status.phase!=Running"
DELETES_PER_SECOND = 50
FlowKey = tuple[str, str]  # (namespace, flow)


@dataclass(frozen=True, slots=True)
class FinishedRun:
    flow: str
    finished_at: float  # epoch seconds
    version: int | None  # the version it ran, whose stack may set retention
    retention: Retention  # the invocation's own settings
    created_at: float  # epoch seconds: promotions count runs created after them
    succeeded: bool | None  # Completed True, Failed False, otherwise (Cancelled) None
    creator: str = ""  # kitaru.dev/created-by: history limits count per creator


_NO_RETENTION = Retention()


def finished_run(obj: FinishedInvocation) -> FinishedRun | None:
    spec, status = obj.spec, obj.status
    if not spec.flow or not status.completion_time:
        return None
    ttl, limit = spec.ttl_seconds_after_finished, spec.history_limit
    return FinishedRun(
        flow=sys.intern(spec.flow),
        finished_at=_epoch(status.completion_time) or 0.0,
        version=status.resolved.version if status.resolved else None,
        retention=_NO_RETENTION if ttl is None and limit is None else Retention(ttl, limit),
        created_at=_epoch(obj.metadata.creation_timestamp) or 0.0,
        succeeded={"Completed": True, "Failed": False}.get(status.phase or ""),
        creator=sys.intern(obj.metadata.annotations.get(ANNOTATION_CREATED_BY, "")),
    )


def _epoch(timestamp: str | None) -> float | None:
    if not timestamp:
        return None
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


VersionRetention = Callable[[str, str, int], Retention]  # (namespace, flow, version)


class RetentionKeeper:
    """Sink of the finished-invocation informer, and the tasks that delete."""

    def __init__(
        self,
        api: AsyncKube,
        defaults: Retention,
        version_retention: VersionRetention,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api, self.defaults, self.version_retention = api, defaults, version_retention
        self.clock = clock
        self.histories: dict[FlowKey, FlowHistory] = {}
        self.dirty: set[FlowKey] = set()  # flows with new runs: check their limits
        # When a flow's oldest TTL is due: a heap, plus the earliest scheduled per flow so
        # that a run that is not its flow's oldest adds nothing.
        self.deadlines: list[tuple[float, FlowKey]] = []
        self.scheduled: dict[FlowKey, float] = {}
        self.condemned: asyncio.Queue[Key] = asyncio.Queue()
        self.wake = asyncio.Event()
        self.listed = asyncio.Event()

    def policy(self, namespace: str, run: FinishedRun) -> Retention:
        layers = [run.retention]
        if run.version is not None:
            layers.append(self.version_retention(namespace, run.flow, run.version))
        return effective_retention(*layers, self.defaults)

    # --- sink --------------------------------------------------------------------------

    def upsert(self, key: Key, run: FinishedRun) -> None:
        namespace, name = key
        policy = self.policy(namespace, run)
        if policy.keeps_forever:
            return
        flow_key = (namespace, run.flow)
        history = self.histories.setdefault(flow_key, FlowHistory())
        if not history.add(name, run.finished_at, policy, run.creator):
            return  # a finished run is frozen; a later event changes nothing we keep
        self.dirty.add(flow_key)
        if policy.ttl_seconds is not None:
            self._schedule(flow_key, run.finished_at + policy.ttl_seconds)
        self.wake.set()

    def _schedule(self, flow_key: FlowKey, deadline: float) -> None:
        if deadline < self.scheduled.get(flow_key, float("inf")):
            self.scheduled[flow_key] = deadline
            heapq.heappush(self.deadlines, (deadline, flow_key))

    def delete(self, key: Key, run: FinishedRun | None = None) -> None:
        namespace, name = key
        flows = (
            [(namespace, run.flow)]
            if run is not None
            else [k for k in self.histories if k[0] == namespace]
        )
        for flow_key in flows:
            history = self.histories.get(flow_key)
            if history is not None and history.remove(name, run.finished_at if run else None):
                if not len(history):
                    del self.histories[flow_key]
                return

    def keys(self, namespace: str | None) -> Iterable[Key]:
        return [
            (ns, name)
            for (ns, _), history in self.histories.items()
            if namespace is None or ns == namespace
            for name in history
        ]

    # --- deciding --------------------------------------------------------------------

    def due(self) -> float | None:
        """Condemn every run that is due; seconds until the next TTL (None: none)."""
        now = self.clock()
        flows = set()
        if self.listed.is_set():  # limits count runs: only with the whole list in
            flows, self.dirty = self.dirty, set()
        while self.deadlines and self.deadlines[0][0] <= now:
            deadline, flow_key = heapq.heappop(self.deadlines)
            if self.scheduled.get(flow_key) == deadline:
                del self.scheduled[flow_key]
            flows.add(flow_key)
        for flow_key in flows:
            history = self.histories.get(flow_key)
            if history is None:
                continue
            for name in history.take_due(now):
                self.condemned.put_nowait((flow_key[0], name))
            upcoming = history.next_deadline()
            if upcoming is not None:
                self._schedule(flow_key, upcoming)
            if not len(history):
                del self.histories[flow_key]
        return self.deadlines[0][0] - now if self.deadlines else None

    async def run(self) -> None:
        """Decide whenever something new arrives or a deadline passes."""
        while True:
            self.wake.clear()
            wait = self.due()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=wait)

    async def run_deleter(self) -> None:
        """Delete condemned runs, at most `DELETES_PER_SECOND`."""
        loop = asyncio.get_running_loop()
        interval = 1 / DELETES_PER_SECOND
        while True:
            namespace, name = await self.condemned.get()
            started = loop.time()
            try:
                await self.api.delete(INVOCATION, namespace, name)
                logger.info("invocation %s/%s deleted by retention", namespace, name)
            except (ApiError, aiohttp.ClientError, TimeoutError) as exc:
                logger.warning(
                    "retention could not delete %s/%s (%s); retrying", namespace, name, exc
                )
                loop.call_later(5, self.condemned.put_nowait, (namespace, name))
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))
