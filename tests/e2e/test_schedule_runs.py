"""Schedules end to end on the node: a per-minute schedule made with the CLI runs the
flow to Completed through the route as it stands at the tick, and is then shown, paused,
resumed and deleted through the CLI, the SDK and the MCP server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import kubernetes
import pytest
from cli_support import Kitaru as Cli
from cli_support import mcp_session, user_env
from flow_support import GROUP, VERSION, Kitaru
from kitaru.client import KitaruClient
from kitaru.client.connection import resolve_connection
from kitaru.core.schedules import parse_time
from support import wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

TICK_AND_RUN = 240  # the next minute's tick plus a cold pod start on a loaded node


@pytest.fixture
def kitaru(k8s: kubernetes.client.ApiClient, namespace: str) -> Kitaru:
    client = Kitaru(k8s, namespace)
    client.ship_flows()
    return client


def scheduled_runs(kitaru: Kitaru, schedule: str) -> list[dict[str, Any]]:
    found = kitaru.custom.list_namespaced_custom_object(
        GROUP,
        VERSION,
        kitaru.ns,
        "flowinvocations",
        label_selector=f"kitaru.dev/schedule={schedule}",
    )["items"]
    return list(found)


def test_a_per_minute_schedule_runs_the_route_to_completion(
    running_operator: Any, kitaru: Kitaru, namespace: str, tmp_path: Path
) -> None:
    kitaru.deploy("research_agent", 1, "research_agent", {"topic": "durable execution"})
    kitaru.wait_default("research_agent")
    kitaru.deploy("research_agent", 2, "research_agent", {"topic": "durable execution"})
    kitaru.route("research_agent", "stable", 2)
    env = user_env(namespace, tmp_path)
    sdk = KitaruClient(resolve_connection(env))

    cli = Cli(tmp_path, env)
    created = cli(
        "schedule create every-minute research_agent --cron '* * * * *' --tz Europe/Berlin "
        """--tag stable --input '{"topic": "cron"}' --concurrency-policy Forbid -o json"""
    ).json()["item"]
    assert (created["target"], created["time_zone"]) == ("tag stable", "Europe/Berlin")

    def completed() -> dict[str, Any] | None:
        for run in scheduled_runs(kitaru, "every-minute"):
            if (run.get("status") or {}).get("phase") == "Completed":
                return run
        return None

    run = wait_for(completed, timeout=TICK_AND_RUN, message="a scheduled run Completed")
    status = run["status"]
    assert status["resolved"]["version"] == 2 and status["resolved"]["tag"] == "stable"
    assert status["result"]["topic"] == "cron"
    shown = wait_for(
        lambda: sdk.schedules.get("every-minute").last_successful_time,
        timeout=30,
        message="lastSuccessfulTime",
    )
    finished = parse_time(status["completionTime"])
    assert finished is not None and parse_time(shown) == finished.replace(microsecond=0)
    assert f"last success: {shown}" in cli("schedule show every-minute").out

    paused = sdk.schedules.pause("every-minute")
    assert paused.suspended
    wait_for(
        lambda: sdk.schedules.get("every-minute").next_schedule_time is None,
        timeout=30,
        message="no next tick while paused",
    )
    assert not sdk.schedules.resume("every-minute").suspended

    async def through_mcp() -> None:
        async with mcp_session(tmp_path, env) as session:
            listed = await session.call_tool("kitaru_schedules_list", {"flow": "research_agent"})
            assert not listed.is_error and listed.structured_content is not None, listed
            assert [i["name"] for i in listed.structured_content["items"]] == ["every-minute"]
            got = await session.call_tool("kitaru_schedules_get", {"name": "every-minute"})
            assert got.structured_content is not None, got
            assert got.structured_content["target"] == "tag stable"
            deleted = await session.call_tool("kitaru_schedules_delete", {"name": "every-minute"})
            assert not deleted.is_error, deleted

    anyio.run(through_mcp)
    # Its runs go with it (owner references).
    wait_for(
        lambda: not scheduled_runs(kitaru, "every-minute"), timeout=60, message="runs collected"
    )
