"""Concurrency limits on every surface: set at deploy and with `kitaru flow limit` (CLI,
SDK, MCP, kubectl), runs over the limit Queued with their place in line, cancel while
queued, and — on a node — 50 runs under a limit of 3 that all complete in order."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from cli_support import Kitaru, mcp_session, new_project
from kitaru.client import KitaruClient
from kitaru.client.connection import resolve_connection
from support import OperatorProcess, kubectl, wait_for

FLOW = "research_agent"


def _sdk(kitaru: Kitaru) -> KitaruClient:
    """The SDK on the CLI's connection (not a saved login of whoever runs the tests)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", kitaru.env["XDG_CONFIG_HOME"])
        return KitaruClient(resolve_connection(kitaru.env))


def _spec(namespace: str, route: str) -> dict[str, Any]:
    found = kubectl("get", "froute", route, "-o", "json", namespace=namespace).stdout
    spec: dict[str, Any] = json.loads(found)["spec"]
    return spec


def _execution(kitaru: Kitaru, exec_id: str) -> dict[str, Any]:
    item: dict[str, Any] = kitaru(f"executions get {exec_id} -o json").json()["item"]
    return item


def _job_finished(job: dict[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions)


def _jobs(namespace: str) -> set[str]:
    listed = json.loads(kubectl("get", "jobs", "-o", "json", namespace=namespace).stdout)
    return {job["metadata"]["name"] for job in listed["items"]}


def test_limits_are_set_on_every_surface_and_queue_runs(
    running_operator: object, namespace: str, tmp_path: Path
) -> None:
    # Started runs must stay active while the queue is looked at: a quota that admits no
    # pod holds each started run (its Job exists) without a container ever finishing it.
    kubectl("create", "quota", "no-pods", "--hard=pods=0", namespace=namespace)
    kitaru = new_project(tmp_path, namespace)
    kitaru(f'deploy flows/research.py:{FLOW} --input \'{{"topic": "t"}}\'')
    kitaru(f"deploy flows/research.py:{FLOW} --tag canary --exclusive --max-concurrency 1")
    assert _spec(namespace, "research-agent.canary")["maxConcurrency"] == 1

    item = kitaru(f"flow limit {FLOW} 2 -o json").json()["item"]
    assert (item["tag"], item["flow_max_concurrency"]) == ("default", 2)
    assert kitaru(f"flow limit {FLOW} 1 --tag canary").out.strip() == (
        f"tag canary of {FLOW}: at most 1 active run(s)"
    )
    # Moving the tag keeps its limit: routing and limits are separate fields.
    kitaru(f"flow tag {FLOW} canary --version 1 --exclusive")
    assert _spec(namespace, "research-agent.canary")["maxConcurrency"] == 1

    runs = [
        kitaru(f"invoke {FLOW} --tag canary -o json").json()["item"]["exec_id"] for _ in range(3)
    ]
    wait_for(lambda: _jobs(namespace) == {runs[0]}, 30, message="the first run has its Job")
    wait_for(
        lambda: [_execution(kitaru, r)["queue_position"] for r in runs[1:]] == [1, 2],
        30,
        message="two runs queued in order",
    )
    queued = kitaru(f"executions list --flow {FLOW} --status queued -o json").json()
    assert {e["exec_id"] for e in queued["items"]} == set(runs[1:])
    wide = kubectl("get", "finv", runs[2], "-o", "wide", namespace=namespace).stdout
    assert re.search(r"QUEUE", wide) and "Queued" in wide

    kitaru(f"executions cancel {runs[2]}")
    wait_for(lambda: _execution(kitaru, runs[2])["status"] == "cancelled", 30)

    # MCP clears the tag's limit: the flow's limit (2) now lets the queued run start.
    async def clear_tag_limit() -> dict[str, Any]:
        async with mcp_session(kitaru.project, kitaru.env) as session:
            result = await session.call_tool(
                "kitaru_deployments_limit",
                {"flow": FLOW, "tag": "canary", "max_concurrency": None},
            )
            assert not result.is_error, result
            return json.loads(result.content[0].text)  # type: ignore[union-attr,no-any-return]

    assert anyio.run(clear_tag_limit)["max_concurrency"] is None
    wait_for(lambda: _jobs(namespace) == {runs[0], runs[1]}, 30, message="second run started")
    assert runs[2] not in _jobs(namespace)  # cancelled while queued: never a Job

    # The flow's limit now holds the third run back; the SDK clears it.
    third = kitaru(f"invoke {FLOW} -o json").json()["item"]["exec_id"]
    wait_for(lambda: _execution(kitaru, third)["queue_position"] == 1, 30)
    assert _sdk(kitaru).deployments.limit(FLOW, None).flow_max_concurrency is None
    wait_for(lambda: third in _jobs(namespace), 30, message="third run started")
    assert kitaru(f"flow limit {FLOW} --clear").out.strip() == f"{FLOW}: no limit"


def test_fifty_runs_under_a_limit_of_three(
    running_operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    """Needs the node: the runs really complete. Never more than 3 Jobs active (sampled
    all along: a Job without a Complete or Failed condition), every run completes, and
    they start in the order they were invoked."""
    kitaru = new_project(tmp_path, namespace)
    kitaru(f'deploy flows/research.py:{FLOW} --input \'{{"topic": "t"}}\'')
    kitaru(f"flow limit {FLOW} 3")
    client = _sdk(kitaru)

    most_active = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal most_active
        while not done.is_set():
            jobs = json.loads(kubectl("get", "jobs", "-o", "json", namespace=namespace).stdout)
            active = [job for job in jobs["items"] if not _job_finished(job)]
            most_active = max(most_active, len(active))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        runs = [
            client.deployments.invoke(FLOW, inputs={"topic": f"run {i}"}).exec_id for i in range(50)
        ]
        for exec_id in runs:
            assert client.executions.wait(exec_id, timeout=600).status == "completed", exec_id
    finally:
        done.set()
        sampler.join()
    assert 0 < most_active <= 3, most_active

    created = re.findall(rf"created job {re.escape(namespace)}/(\S+)", running_operator.log())
    assert sorted(name for name in created if name in set(runs)) == sorted(runs)
    # First in, first out: no run's Job is created in a second before an earlier run's.
    # (Two slots freed together are filled by two dispatches at once, so the order of
    # their creates within one second is not the order of admission.)
    jobs = json.loads(kubectl("get", "jobs", "-o", "json", namespace=namespace).stdout)
    started = {j["metadata"]["name"]: j["metadata"]["creationTimestamp"] for j in jobs["items"]}
    in_order = [started[name] for name in runs]
    assert in_order == sorted(in_order), list(zip(runs, in_order, strict=True))
