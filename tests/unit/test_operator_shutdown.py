"""The operator stops in order: background work ends before the API client closes, and a
call after close is an expected outcome, not a traceback in the log."""

from __future__ import annotations

import asyncio
import logging

import pytest
from kitaru_operator.kube import POD, AsyncKube, ClientClosed
from kitaru_operator.runtime import BackgroundTasks
from kubernetes import client


def closed_client() -> AsyncKube:
    configuration = client.Configuration()
    configuration.host = "https://127.0.0.1:1"
    return AsyncKube(configuration)


def test_a_wake_up_during_stop_starts_nothing() -> None:
    started: list[str] = []

    async def work(name: str) -> None:
        started.append(name)
        await asyncio.sleep(3600)

    async def scenario() -> BackgroundTasks:
        background = BackgroundTasks()
        background.spawn(work("informer"))
        await asyncio.sleep(0)
        # A retry timer that fires while the running tasks are being cancelled.
        asyncio.get_running_loop().call_soon(background.spawn, work("retry"))
        await background.stop()
        await asyncio.sleep(0)
        background.spawn(work("late"))  # dropped, never awaited, no warning
        return background

    background = asyncio.run(scenario())
    assert started == ["informer"]
    assert background.tasks == set()


def test_every_call_after_close_raises_client_closed() -> None:
    async def scenario() -> list[str]:
        api = closed_client()
        await api.close()
        raised = []
        for call in (
            api.create(POD, "ns", {}),
            api.list_raw(POD, "ns", limit=1),
            anext(api.watch(POD, "ns", "1")),
        ):
            with pytest.raises(ClientClosed) as error:
                await call
            raised.append(str(error.value))
        return raised

    assert [text.split()[0] for text in asyncio.run(scenario())] == ["POST", "GET", "WATCH"]


def test_a_task_that_met_the_closed_client_is_logged_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        api = closed_client()
        await api.close()
        background = BackgroundTasks()
        background.spawn(api.get(POD, "ns", "pod"))
        while background.tasks:
            await asyncio.sleep(0)

    with caplog.at_level(logging.INFO, logger="kitaru_operator"):
        asyncio.run(scenario())
    [record] = caplog.records
    assert "the API client is closed" in record.getMessage()
    assert record.exc_info is None and record.levelno == logging.INFO
