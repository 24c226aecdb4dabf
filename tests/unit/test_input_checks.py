"""The operator checks inputs in a worker process with a time limit (issue 23, item 1):
real worker processes, the loop measured while they work."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from kitaru.core.inputs import InvalidInputs
from kitaru_operator.input_checks import InputChecker

SCHEMA = {"type": "object", "properties": {"topic": {"type": "string"}}, "required": ["topic"]}


def slow_schema() -> dict[str, Any]:
    """Seconds of bounded work for one check (2**15 unions applied to one value)."""
    levels = 15
    defs: dict[str, Any] = {
        f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 2} for i in range(levels)
    }
    defs[f"d{levels}"] = {"type": "string"}
    return {"properties": {"x": {"$ref": "#/$defs/d0"}}, "$defs": defs}


async def _gaps(stop: asyncio.Event, gaps: list[float]) -> None:
    """The longest the loop was away, sampled every 10 ms."""
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.01)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


def test_checks_run_in_one_long_lived_worker() -> None:
    async def scenario() -> set[int]:
        checker = InputChecker()
        try:
            pids = set()
            for index in range(20):
                await checker.check({"topic": f"t{index}"}, SCHEMA)
                pids.add(checker.idle[0].process.pid)
            with pytest.raises(InvalidInputs, match="missing required input 'topic'"):
                await checker.check({}, SCHEMA)
            with pytest.raises(InvalidInputs, match="input schema is invalid: # applies itself"):
                await checker.check({"topic": "x"}, {"$ref": "#"})
            pids.add(checker.idle[0].process.pid)
            return pids
        finally:
            await checker.close()

    assert len(asyncio.run(scenario())) == 1  # no process per check


def test_a_check_over_the_time_limit_kills_its_worker_and_fails_that_run_only() -> None:
    async def scenario() -> float:
        checker = InputChecker(timeout=0.3)
        stop, gaps = asyncio.Event(), []
        ticker = asyncio.create_task(_gaps(stop, gaps))
        try:
            await checker.check({"topic": "warm"}, SCHEMA)  # the worker is up
            first = checker.idle[0].process
            started = time.perf_counter()
            with pytest.raises(InvalidInputs, match=r"took longer than 0.3 s and was stopped"):
                await checker.check({"x": 1}, slow_schema())
            assert time.perf_counter() - started < 2
            assert first.returncode is not None  # killed, not left burning a core
            await checker.check({"topic": "next"}, SCHEMA)  # a fresh worker
            assert checker.idle[0].process.pid != first.pid
        finally:
            stop.set()
            await ticker
            await checker.close()
        return max(gaps)

    assert asyncio.run(scenario()) < 0.25  # the loop went on meanwhile


def test_concurrent_checks_share_the_pool() -> None:
    async def scenario() -> None:
        checker = InputChecker(workers=2)
        try:
            results = await asyncio.gather(
                *(checker.check({"topic": str(i)}, SCHEMA) for i in range(10)),
                checker.check({"topic": 3}, SCHEMA),
                return_exceptions=True,
            )
            assert results[:10] == [None] * 10
            assert isinstance(results[10], InvalidInputs)
            assert checker.running <= 2
        finally:
            await checker.close()

    asyncio.run(scenario())


def test_inputs_nested_as_deep_as_the_api_server_allows_fail_without_the_worker() -> None:
    """kubectl may store inputs nested 10 000 levels: refused on the loop (the C encoder
    and an iterative walk), never sent to the worker, whose decoder would recurse."""
    deep: Any = "x"
    for _ in range(9_990):
        deep = [deep]

    async def scenario() -> None:
        checker = InputChecker()
        try:
            with pytest.raises(InvalidInputs, match="nested more than 64 levels deep"):
                await checker.check({"deep": deep}, SCHEMA)
            assert checker.running == 0  # no worker was needed
        finally:
            await checker.close()

    asyncio.run(scenario())
