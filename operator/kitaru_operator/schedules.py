"""FlowSchedules: one timer per schedule, armed for its next tick.

Two informers feed this module: the schedules (`ScheduleBook`) and their runs — only
FlowInvocations labelled `kitaru.dev/schedule`, as a phase and a finish time each
(`ScheduledRuns`), so memory follows the runs the history limits keep, not the
namespace's 100 000 finished runs. The label only narrows the watch: a run counts as a
schedule's (for Forbid, Replace and the history limits that delete runs) only when the
schedule is its controller owner, by uid — what the operator sets when it starts the
run, and what admission lets nobody else set. Nothing polls: an idle schedule costs one timer
handle in the event loop; a tick, a spec change or one of its runs finishing runs one
reconcile of that schedule (`kitaru.core.schedules.plan_pass` decides, from memory and
the clock), which reads the schedule, starts or skips the tick's run, cancels (Replace)
and prunes runs, writes the status with its resourceVersion, and arms the next timer.

The tick's run has a deterministic name, so a restart between creating it and
recording the tick finds it existing (409): already started, never twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kitaru.core.models import FlowScheduleSpec, FlowScheduleStatus
from kitaru.core.names import GROUP_VERSION, LABEL_SCHEDULE
from kitaru.core.schedules import (
    ScheduledRun,
    build_scheduled_run,
    parse_time,
    plan_pass,
    run_name,
)
from pydantic import ValidationError

from kitaru_operator.events import EventRecorder, ObjectRef
from kitaru_operator.informer import Key
from kitaru_operator.kube import INVOCATION, SCHEDULE, ApiError, AsyncKube
from kitaru_operator.objects import Object, ScheduledInvocation

logger = logging.getLogger("kitaru_operator")
# Timers fire a little after the tick, so that the clock read then is past it.
TIMER_SLACK_SECONDS = 0.05
STATUS_WRITE_ATTEMPTS = 3
RETRY_SECONDS = 10
# A test seam: `ORIGIN:RATE` makes the schedules' clock run RATE times as fast from ORIGIN.
CLOCK_ENV = "KITARU_SCHEDULE_CLOCK"


@dataclass(frozen=True, slots=True)
class ScheduleClock:
    """The wall clock schedules tick by: real time, or (a test seam, `$KITARU_SCHEDULE_CLOCK`
    = `ORIGIN:RATE`, epoch seconds and a factor) time running RATE times as fast from
    ORIGIN, so that a story of cron minutes takes 60/RATE real seconds a minute. Every
    decision reads this clock (`kitaru.core.schedules.plan_pass` takes it as `now`);
    timers wait the real seconds a span of its time takes."""

    origin: float = 0.0
    rate: float = 1.0

    def __call__(self) -> datetime:
        real = time.time()
        return datetime.fromtimestamp(self.origin + (real - self.origin) * self.rate, UTC)

    def real_seconds(self, span: float) -> float:
        return span / self.rate

    @classmethod
    def parse(cls, text: str) -> ScheduleClock:
        """`ORIGIN:RATE`; the empty string is real time."""
        if not text:
            return cls()
        origin, _, rate = text.partition(":")
        clock = cls(float(origin), float(rate))
        if clock.rate <= 0:
            raise ValueError(f"{CLOCK_ENV}={text!r}: the rate must be above 0")
        return clock

    def __str__(self) -> str:
        return f"{self.origin}:{self.rate}"


@dataclass(frozen=True, slots=True)
class RunRecord:
    schedule: str
    schedule_uid: str
    run: ScheduledRun


def scheduled_run_record(obj: ScheduledInvocation) -> RunRecord | None:
    """The run of the schedule that controls it (its controller owner reference), else
    None: a `kitaru.dev/schedule` label alone makes nothing a schedule's run."""
    owner = next(
        (
            ref
            for ref in obj.metadata.owner_references
            if ref.controller and ref.kind == "FlowSchedule" and ref.api_version == GROUP_VERSION
        ),
        None,
    )
    if owner is None or owner.name != obj.metadata.labels.get(LABEL_SCHEDULE):
        return None
    run = ScheduledRun(obj.metadata.name, obj.status.phase, parse_time(obj.status.completion_time))
    return RunRecord(owner.name, owner.uid, run)


class ScheduledRuns:
    """Sink of the scheduled-run informer: each schedule's runs, by (namespace, name),
    each with the uid of the schedule that owns it (a schedule deleted and created again
    under its name does not inherit the runs of the one before)."""

    def __init__(self, finished: Callable[[Key], None]) -> None:
        self.by_schedule: dict[Key, dict[str, tuple[str, ScheduledRun]]] = {}
        self.schedule_of: dict[Key, str] = {}
        self.finished = finished  # a run of this schedule finished or vanished

    def of(self, key: Key, uid: str) -> list[ScheduledRun]:
        """The runs of the schedule `key` whose uid is `uid`."""
        return [run for owner, run in self.by_schedule.get(key, {}).values() if owner == uid]

    def add(self, namespace: str, schedule: str, uid: str, run: ScheduledRun) -> None:
        """Record a run this process created before its watch event arrives (Forbid
        must see it at once)."""
        self.by_schedule.setdefault((namespace, schedule), {}).setdefault(run.name, (uid, run))
        self.schedule_of[(namespace, run.name)] = schedule

    def upsert(self, key: Key, record: RunRecord) -> None:
        owner = (key[0], record.schedule)
        runs = self.by_schedule.setdefault(owner, {})
        before = runs.get(record.run.name)
        runs[record.run.name] = (record.schedule_uid, record.run)
        self.schedule_of[key] = record.schedule
        if record.run.finished and (before is None or not before[1].finished):
            self.finished(owner)

    def delete(self, key: Key, record: RunRecord | None = None) -> None:
        schedule = self.schedule_of.pop(key, None)
        if schedule is None:
            return
        owner = (key[0], schedule)
        runs = self.by_schedule.get(owner, {})
        gone = runs.pop(key[1], None)
        if not runs:
            self.by_schedule.pop(owner, None)
        if gone is not None and not gone[1].finished:
            self.finished(owner)

    def keys(self, namespace: str | None) -> Iterable[Key]:
        return [k for k in self.schedule_of if namespace is None or k[0] == namespace]


class ScheduleBook:
    """Sink of the schedule informer, and the timers and reconciles of schedules."""

    def __init__(
        self,
        api: AsyncKube,
        events: EventRecorder,
        spawn: Callable[[Any], None],
        clock: ScheduleClock = ScheduleClock(),
    ) -> None:
        self.api, self.events, self.spawn, self.clock = api, events, spawn, clock
        self.objects: dict[Key, Object] = {}
        self.planned: dict[Key, int | None] = {}  # generation each timer was armed for
        self.timers: dict[Key, asyncio.TimerHandle] = {}
        self.locks: dict[Key, asyncio.Lock] = {}
        self.runs = ScheduledRuns(self.poke)
        self.started = asyncio.Event()  # both informers listed: plan

    # --- sink -------------------------------------------------------------------------

    def upsert(self, key: Key, record: Object) -> None:
        self.objects[key] = record
        if self.started.is_set() and self.planned.get(key, -1) != record.metadata.generation:
            self.poke(key)

    def delete(self, key: Key, record: Object | None = None) -> None:
        self.objects.pop(key, None)
        self.planned.pop(key, None)
        self.locks.pop(key, None)
        if (timer := self.timers.pop(key, None)) is not None:
            timer.cancel()

    def keys(self, namespace: str | None) -> Iterable[Key]:
        return [k for k in self.objects if namespace is None or k[0] == namespace]

    # --- planning ---------------------------------------------------------------------

    def start(self) -> None:
        """Both informers have listed: arm every schedule, catching up on missed ticks."""
        self.started.set()
        for key in list(self.objects):
            if not self._arm_from_memory(key):
                self.poke(key)

    def _arm_from_memory(self, key: Key) -> bool:
        """Arm a schedule whose recorded status is current and has nothing due, without
        an API call (a restart with 1 000 schedules reads none of them again)."""
        obj = self.objects[key]
        try:
            spec = FlowScheduleSpec.model_validate(obj.spec)
            status = FlowScheduleStatus.model_validate(obj.status or {})
        except ValidationError:
            return False
        if status.observed_generation != obj.metadata.generation:
            return False
        decided = plan_pass(
            key[1],
            spec,
            status,
            created=parse_time(obj.metadata.creation_timestamp) or self.clock(),
            generation=obj.metadata.generation,
            runs=self.runs.of(key, obj.metadata.uid),
            now=self.clock(),
        )
        if decided.fire or decided.prune or decided.skipped or decided.events:
            return False
        if decided.status.wire() != (obj.status or {}):
            return False
        self._arm(key, decided.next_tick, obj.metadata.generation)
        return True

    def poke(self, key: Key) -> None:
        """Reconcile one schedule soon (a spec change, a run finished, its tick)."""
        if self.started.is_set() and key in self.objects:
            self.spawn(self.reconcile(key))

    def _arm(self, key: Key, at: datetime | None, generation: int | None) -> None:
        if (timer := self.timers.pop(key, None)) is not None:
            timer.cancel()
        self.planned[key] = generation
        if at is None:
            return
        span = max((at - self.clock()).total_seconds(), 0)
        delay = self.clock.real_seconds(span) + TIMER_SLACK_SECONDS
        self.timers[key] = asyncio.get_running_loop().call_later(delay, self.poke, key)

    async def reconcile(self, key: Key) -> None:
        lock = self.locks.setdefault(key, asyncio.Lock())
        async with lock:
            for _ in range(STATUS_WRITE_ATTEMPTS):
                try:
                    if await self._pass(key):
                        return
                except (ApiError, aiohttp.ClientError, TimeoutError) as exc:
                    logger.warning("schedule %s/%s: %s; retrying in 10 s", *key, exc)
                    break
            else:
                logger.warning("schedule %s/%s: status kept changing; retrying in 10 s", *key)
            self._arm_retry(key)

    def _arm_retry(self, key: Key) -> None:
        """Try again soon: an API error or lost races must not leave a schedule unarmed."""
        if (timer := self.timers.pop(key, None)) is not None:
            timer.cancel()
        if key in self.objects:
            self.timers[key] = asyncio.get_running_loop().call_later(RETRY_SECONDS, self.poke, key)

    async def _pass(self, key: Key) -> bool:
        """One reconcile; False when the status write lost a race (run it again)."""
        namespace, name = key
        body = await self.api.get(SCHEDULE, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return True
        meta = body["metadata"]
        ref = ObjectRef(GROUP_VERSION, "FlowSchedule", namespace, name, meta["uid"])
        try:
            spec = FlowScheduleSpec.model_validate(body.get("spec") or {})
            status = FlowScheduleStatus.model_validate(body.get("status") or {})
        except ValidationError as exc:  # the CRD schema makes this unlikely
            logger.warning("schedule %s/%s is malformed: %s", namespace, name, exc)
            return True
        now = self.clock()
        decided = plan_pass(
            name,
            spec,
            status,
            created=parse_time(meta["creationTimestamp"]) or now,
            generation=meta.get("generation"),
            runs=self.runs.of(key, meta["uid"]),
            now=now,
        )
        for reason, message, warning in decided.events:
            self.events.post(ref, reason, message, warning)
        if decided.error is not None and decided.error.message != _ready_message(status):
            self.events.post(ref, decided.error.reason, decided.error.message, warning=True)
        for run in decided.cancel:
            await self.api.patch(INVOCATION, namespace, run, {"spec": {"cancelRequested": True}})
            self.events.post(ref, "Replaced", f"cancelled {run} (concurrencyPolicy Replace)")
        if decided.fire is not None:
            await self._start(ref, body, spec, decided.fire)
        for run in decided.prune:
            await self.api.delete(INVOCATION, namespace, run)
        new = decided.status.wire()
        if new != (body.get("status") or {}):
            written = await self.api.replace(
                SCHEDULE, {**body, "status": new}, subresource="status"
            )
            if written is None:
                return False
        self._arm(key, decided.next_tick, meta.get("generation"))
        return True

    async def _start(
        self, ref: ObjectRef, body: dict[str, Any], spec: FlowScheduleSpec, tick: datetime
    ) -> None:
        run = build_scheduled_run(body, spec, tick)
        created = await self.api.create(INVOCATION, ref.namespace, run)
        name = run_name(ref.name, tick)
        self.runs.add(ref.namespace, ref.name, ref.uid, ScheduledRun(name, None))
        if created is None:
            logger.info("%s: the run %s of %s exists already", ref, name, tick)
            return
        self.events.post(ref, "Started", f"started {name} for the tick at {tick:%Y-%m-%dT%H:%MZ}")


def _ready_message(status: FlowScheduleStatus) -> str:
    ready = next((c for c in status.conditions if c.type == "Ready"), None)
    return ready.message if ready is not None else ""
