"""What every reconcile reads and writes: the API client, the in-memory model, the
running invocations, per-invocation locks and the Event recorder."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Coroutine, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kitaru_operator.concurrency import ConcurrencyGate
from kitaru_operator.events import EventRecorder
from kitaru_operator.flows import Flows
from kitaru_operator.informer import Key
from kitaru_operator.input_checks import InputChecker
from kitaru_operator.kube import AsyncKube, ClientClosed
from kitaru_operator.retention import RetentionKeeper
from kitaru_operator.runs import JobRecord, Jobs, RunningPods
from kitaru_operator.shadows import ShadowTally

if TYPE_CHECKING:
    from kitaru_operator.schedules import ScheduleBook

logger = logging.getLogger("kitaru_operator")


class StripedLocks:
    """A fixed set of asyncio locks picked by key hash: bounded memory, no cleanup.

    Serialises reconciles of one invocation triggered from different watch streams
    (the invocation, its Job, its pods) without a lock per object.
    """

    def __init__(self, stripes: int = 256) -> None:
        self._locks = [asyncio.Lock() for _ in range(stripes)]

    def __call__(self, key: Hashable) -> asyncio.Lock:
        digest = hashlib.blake2b(repr(key).encode(), digest_size=4).digest()
        return self._locks[int.from_bytes(digest, "big") % len(self._locks)]


class BackgroundTasks:
    """The process's background work (informers, workers, wake-ups), stopped as one.

    Stopping refuses new work first: a wake-up timer that fires while the tasks are
    being cancelled would otherwise start a reconcile after the API client is closed.
    """

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.stopping = False

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine in the background, keeping it referenced until it is done;
        once stopping, drop it unstarted."""
        if self.stopping:
            coroutine.close()
            return
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self._finished)

    async def stop(self) -> None:
        """Refuse new work, cancel every task and wait until all have ended."""
        self.stopping = True
        while pending := [task for task in self.tasks if not task.done()]:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        if isinstance(error, ClientClosed):  # stopping: expected, not a failure
            logger.info("background task stopped: %s", error)
        else:
            logger.error("background task failed", exc_info=error)


@dataclass
class Runtime:
    api: AsyncKube
    events: EventRecorder
    flows: Flows
    jobs: Jobs
    pods: RunningPods
    retention: RetentionKeeper
    shadows: ShadowTally
    gate: ConcurrencyGate
    # How long an invocation may wait for what it names (unless it says otherwise).
    resolve_deadline_seconds: float = 60.0
    # The image of a version that names none and whose stack has no runner image.
    default_runner_image: str | None = None
    # Set once versions, routes, Jobs and pods are listed: resolution waits for it.
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    # The running invocations, as the watch last delivered them.
    invocations: dict[Key, dict[str, Any]] = field(default_factory=dict)
    # Invocations waiting for their flow to converge, by (namespace, flow).
    waiting: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    locks: StripedLocks = field(default_factory=StripedLocks)
    # Jobs this process created or updated that the Job watch has not delivered yet.
    recent_jobs: dict[Key, JobRecord] = field(default_factory=dict)
    # The Jobs this process created, whole (their pod template), while their run lasts.
    job_bodies: dict[Key, dict[str, Any]] = field(default_factory=dict)
    # Invocations whose status this process wrote, until the watch delivers the write:
    # key -> (resourceVersion the write was based on, the object as written).
    written: dict[Key, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    background: BackgroundTasks = field(default_factory=BackgroundTasks)
    # FlowSchedules and their timers (set by `startup.start`).
    schedules: ScheduleBook | None = None
    # Checks runs' inputs against their schemas in a worker process (off this loop).
    input_checker: InputChecker = field(default_factory=InputChecker)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        self.background.spawn(coroutine)
