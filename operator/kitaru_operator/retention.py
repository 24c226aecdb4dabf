"""Retention of finished runs: delete each after its time to live, or once its flow has
its history limit of newer finished runs (`kitaru.core.retention`).

Finished invocations come from their own informer (a field selector on `status.phase`),
which keeps per run only what retention needs: a finish time and a limit in a per-flow
list ordered by finish time, and a deadline in one heap. A run that is kept forever
costs nothing. Work follows change: a new finished run checks its flow's list from the
oldest end (stopping below the smallest limit), and a timer sleeps until the earliest
deadline. Deletions are paced so that a backlog (e.g. the first start on a namespace of
100 000 old runs) never crowds out dispatch; the Job and pods go with the invocation
through their owner references.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
from kitaru.core.retention import Retention, effective_retention, over_history_limit

from kitaru_operator.informer import Key
from kitaru_operator.kube import INVOCATION, ApiError, AsyncKube

logger = logging.getLogger("kitaru_operator")
FINISHED_SELECTOR = "status.phase!=,status.phase!=Pending,status.phase!=Running"
DELETES_PER_SECOND = 50


@dataclass(frozen=True, slots=True)
class FinishedRun:
    flow: str
    finished_at: float  # epoch seconds
    version: int | None  # the version it ran, whose stack may set retention
    retention: Retention  # the invocation's own settings


_NO_RETENTION = Retention()


def finished_run(obj: dict[str, Any]) -> FinishedRun | None:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    completed = status.get("completionTime")
    if "flow" not in spec or not completed:
        return None
    ttl, limit = spec.get("ttlSecondsAfterFinished"), spec.get("historyLimit")
    return FinishedRun(
        flow=sys.intern(spec["flow"]),
        finished_at=datetime.fromisoformat(completed.replace("Z", "+00:00")).timestamp(),
        version=(status.get("resolved") or {}).get("version"),
        retention=_NO_RETENTION if ttl is None and limit is None else Retention(ttl, limit),
    )


@dataclass
class History:
    """One flow's finished runs that retention may delete, oldest first."""

    order: list[tuple[float, str]] = field(default_factory=list)
    limits: dict[str, int | None] = field(default_factory=dict)
    limit_counts: Counter[int | None] = field(default_factory=Counter)

    def add(self, finished_at: float, name: str, limit: int | None) -> None:
        bisect.insort(self.order, (finished_at, name))
        self.limits[name] = limit
        self.limit_counts[limit] += 1

    def remove(self, name: str, finished_at: float) -> None:
        limit = self.limits.pop(name)
        self.limit_counts[limit] -= 1
        if not self.limit_counts[limit]:
            del self.limit_counts[limit]
        index = bisect.bisect_left(self.order, (finished_at, name))
        if index < len(self.order) and self.order[index][1] == name:
            del self.order[index]

    def over_limit(self) -> list[str]:
        limits = [limit for limit in self.limit_counts if limit is not None]
        if not limits:
            return []
        return over_history_limit(self.order, self.limits, min(limits))


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
        self.histories: dict[tuple[str, str], History] = {}
        self.finished_at: dict[Key, tuple[str, float]] = {}  # (flow, finished_at) by run
        self.deadlines: list[tuple[float, str, str]] = []  # (deadline, namespace, name)
        self.condemned: asyncio.Queue[Key] = asyncio.Queue()
        self.dirty_flows: set[tuple[str, str]] = set()
        self.wake = asyncio.Event()
        self.listed = asyncio.Event()

    # --- sink --------------------------------------------------------------------------

    def upsert(self, key: Key, run: FinishedRun) -> None:
        if key in self.finished_at:
            return  # a finished run is frozen; later events change nothing we keep
        namespace, name = key
        layers = [run.retention]
        if run.version is not None:
            layers.append(self.version_retention(namespace, run.flow, run.version))
        retention = effective_retention(*layers, self.defaults)
        if retention.keeps_forever:
            return
        self.finished_at[key] = (run.flow, run.finished_at)
        history = self.histories.setdefault((namespace, run.flow), History())
        history.add(run.finished_at, name, retention.history_limit)
        if retention.ttl_seconds is not None:
            heapq.heappush(self.deadlines, (run.finished_at + retention.ttl_seconds, *key))
        if retention.history_limit is not None:
            self.dirty_flows.add((namespace, run.flow))
        self.wake.set()

    def delete(self, key: Key) -> None:
        kept = self.finished_at.pop(key, None)
        if kept is None:
            return
        flow, finished_at = kept
        history_key = (key[0], flow)
        history = self.histories[history_key]
        history.remove(key[1], finished_at)
        if not history.limits:
            del self.histories[history_key]

    def keys(self, namespace: str | None) -> Iterable[Key]:
        return [k for k in self.finished_at if namespace is None or k[0] == namespace]

    # --- deciding --------------------------------------------------------------------

    def _condemn(self, key: Key) -> None:
        """Stop keeping the run and queue its deletion (its DELETED event finds nothing)."""
        self.delete(key)
        self.condemned.put_nowait(key)

    def due(self) -> float | None:
        """Condemn every run past its deadline or over its flow's limit; seconds until the
        next deadline (None: none)."""
        if self.listed.is_set():
            for flow_key in self.dirty_flows:
                history = self.histories.get(flow_key)
                for name in history.over_limit() if history else ():
                    self._condemn((flow_key[0], name))
            self.dirty_flows.clear()
        now = self.clock()
        while self.deadlines:
            deadline, namespace, name = self.deadlines[0]
            if deadline > now:
                return deadline - now
            heapq.heappop(self.deadlines)
            if (namespace, name) in self.finished_at:
                self._condemn((namespace, name))
        return None

    async def run(self) -> None:
        """Decide whenever something new arrives or a deadline passes."""
        while True:
            self.wake.clear()
            wait = self.due()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=wait)

    async def run_deleter(self) -> None:
        """Delete condemned runs, at most `DELETES_PER_SECOND`."""
        interval = 1 / DELETES_PER_SECOND
        while True:
            namespace, name = await self.condemned.get()
            started = asyncio.get_running_loop().time()
            try:
                await self.api.delete(INVOCATION, namespace, name)
                logger.info("invocation %s/%s deleted by retention", namespace, name)
            except (ApiError, aiohttp.ClientError, TimeoutError) as exc:
                logger.warning(
                    "retention could not delete %s/%s (%s); retrying", namespace, name, exc
                )
                asyncio.get_running_loop().call_later(
                    5, self.condemned.put_nowait, (namespace, name)
                )
            elapsed = asyncio.get_running_loop().time() - started
            await asyncio.sleep(max(0.0, interval - elapsed))
