"""Checking a run's inputs against its version's input schema, off the event loop.

The schema is a producer's, the inputs a consumer's: whatever they say, the operator's
loop (every namespace's dispatch, the health endpoint, SIGTERM) must not wait on them.
The check itself is bounded (`kitaru.core.schema_bounds`: linear-time regular
expressions, no self-application, a step budget); on top of that it runs in a long-lived
worker process (`input_worker`) with a time limit. A worker that overruns it is killed —
the one thing that bounds CPU whatever went wrong — and the run fails with a reason that
says so; the next check starts a fresh worker. No process is started per check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

from kitaru.core.inputs import InvalidInputs, canonical_json, check_inputs

from kitaru_operator import metrics

logger = logging.getLogger("kitaru_operator")
DEFAULT_TIMEOUT_SECONDS = 5.0
START_TIMEOUT_SECONDS = 60.0  # importing the core on a busy node


class _WorkerLost(Exception):
    """The worker ended (or was killed) before it answered."""


class _Worker:
    """One `input_worker` process: one request at a time."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "kitaru_operator.input_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        worker = cls(process)
        try:
            assert process.stdout is not None
            async with asyncio.timeout(START_TIMEOUT_SECONDS):
                ready = await process.stdout.readline()
            if json.loads(ready or b"{}") != {"ready": True}:
                raise _WorkerLost
        except BaseException:
            await worker.kill()
            raise
        return worker

    async def ask(self, request: bytes) -> dict[str, Any]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(request)
            await stdin.drain()
            line = await stdout.readline()
        except (ConnectionError, BrokenPipeError) as exc:
            raise _WorkerLost from exc
        if not line:
            raise _WorkerLost
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        await self.process.wait()


class InputChecker:
    """A small pool of worker processes, started on first use and kept."""

    def __init__(self, workers: int = 1, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.size, self.timeout = workers, timeout
        self.idle: list[_Worker] = []
        self.running = 0  # workers started and not killed
        self.freed = asyncio.Condition()
        self.closed = False

    async def check(self, inputs: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
        """Raise InvalidInputs unless `inputs` fit `schema`; a check that overruns the
        time limit, or kills its worker twice, is a failure of that run only."""
        # Plain JSON, 64 levels, 64 KiB (cheap: the C encoder measures first), checked
        # here: what reaches the worker is small and shallow enough to decode.
        check_inputs(inputs)
        request = (
            json.dumps({"inputs": inputs, "schema": canonical_json(schema)}, allow_nan=False) + "\n"
        ).encode()
        for attempt in (1, 2):
            worker = await self._take()
            try:
                async with asyncio.timeout(self.timeout):
                    answer = await worker.ask(request)
            except TimeoutError:
                await self._discard(worker)
                metrics.INPUT_CHECKS.labels("timeout").inc()
                raise InvalidInputs(
                    f"checking the inputs against the version's input schema took longer than "
                    f"{self.timeout:g} s and was stopped: simplify the schema"
                ) from None
            except _WorkerLost:
                await self._discard(worker)
                if attempt == 2:
                    metrics.INPUT_CHECKS.labels("crashed").inc()
                    raise InvalidInputs(
                        "checking the inputs against the version's input schema ended its "
                        "checker process: simplify the schema or the inputs"
                    ) from None
                logger.warning("input checker process ended; starting another")
                continue
            except BaseException:  # cancelled mid-request: the reply would be out of step
                await self._discard(worker)
                raise
            await self._give_back(worker)
            break
        if not answer.get("ok"):
            metrics.INPUT_CHECKS.labels("invalid").inc()
            raise InvalidInputs(str(answer.get("message") or "invalid inputs"))
        metrics.INPUT_CHECKS.labels("valid").inc()

    async def _take(self) -> _Worker:
        async with self.freed:
            while not self.idle and self.running >= self.size:
                await self.freed.wait()
            if self.idle:
                return self.idle.pop()
            self.running += 1
        try:
            return await _Worker.start()
        except BaseException as exc:
            await self._release_slot()
            if isinstance(exc, _WorkerLost | TimeoutError):
                metrics.INPUT_CHECKS.labels("crashed").inc()
                raise InvalidInputs("the input checker process did not start") from exc
            raise

    async def _give_back(self, worker: _Worker) -> None:
        if self.closed:
            await worker.kill()
            return
        async with self.freed:
            self.idle.append(worker)
            self.freed.notify()

    async def _discard(self, worker: _Worker) -> None:
        await worker.kill()
        await self._release_slot()

    async def _release_slot(self) -> None:
        async with self.freed:
            self.running -= 1
            self.freed.notify()

    async def close(self) -> None:
        """Stop every idle worker (one busy now is stopped when its check returns)."""
        self.closed = True
        idle, self.idle = self.idle, []
        for worker in idle:
            await worker.kill()
