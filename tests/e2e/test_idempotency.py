"""Idempotency keys on every surface: the API server's name uniqueness decides, so a key
starts one execution however many requests race, from whichever surface. No run needs to
finish here: the operator creates the Job, and the checks are about the invocations."""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from cli_support import Kitaru, kitaru_argv, mcp_session, new_project
from kitaru.client import KitaruClient
from kitaru.client.connection import resolve_connection
from kitaru.client.idempotency import create_once
from kitaru.core.idempotency import idempotent_name
from kitaru.core.manifests import build_invocation
from support import kubectl, wait_for

FLOW = "research_agent"


def _project(tmp_path: Path, namespace: str) -> Kitaru:
    kitaru = new_project(tmp_path, namespace)
    kitaru(f'deploy flows/research.py:{FLOW} --input \'{{"topic": "t"}}\'')
    return kitaru


def _invocations(namespace: str) -> list[dict[str, object]]:
    listed = kubectl("get", "flowinvocations", "-o", "json", namespace=namespace).stdout
    items: list[dict[str, object]] = json.loads(listed)["items"]
    return items


def _sdk(kitaru: Kitaru) -> KitaruClient:
    """The SDK on the CLI's connection (not a saved login of whoever runs the tests)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", kitaru.env["XDG_CONFIG_HOME"])
        return KitaruClient(resolve_connection(kitaru.env))


def test_the_cli_returns_the_existing_execution_for_a_repeated_key(
    running_operator: object, namespace: str, tmp_path: Path
) -> None:
    kitaru = _project(tmp_path, namespace)
    command = f'invoke {FLOW} --idempotency-key order-7 --input \'{{"topic": "x"}}\''
    first = kitaru(command + " -o json").json()["item"]
    assert first["exec_id"] == idempotent_name(FLOW, "order-7")
    assert (first["existing"], first["idempotency_key"], first["version"]) == (False, "order-7", 1)
    again = kitaru(command).out
    assert again.startswith(f"Existing execution {first['exec_id']} ({FLOW} v1, tag default)")
    assert "idempotency key 'order-7' already started it" in again
    assert kitaru(command + " -o json").json()["item"]["existing"] is True
    assert [i["metadata"]["name"] for i in _invocations(namespace)] == [first["exec_id"]]
    # Without a key, every invoke is a new execution, as before.
    kitaru(f"invoke {FLOW}")
    assert len(_invocations(namespace)) == 2


def test_concurrent_invokes_with_one_key_start_one_execution(
    running_operator: object, namespace: str, tmp_path: Path
) -> None:
    kitaru = _project(tmp_path, namespace)
    client = _sdk(kitaru)

    def invoke(_: int) -> tuple[str, bool]:
        handle = client.deployments.invoke(FLOW, inputs={"topic": "race"}, idempotency_key="k-20")
        return handle.exec_id, handle.existing

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(invoke, range(20)))
    assert {exec_id for exec_id, _ in results} == {idempotent_name(FLOW, "k-20")}
    assert sorted(existing for _, existing in results) == [False] + [True] * 19
    (only,) = _invocations(namespace)
    assert only["spec"]["idempotencyKey"] == "k-20"  # type: ignore[index]


def test_mcp_and_the_sdk_flow_share_the_key(
    running_operator: object, namespace: str, tmp_path: Path
) -> None:
    kitaru = _project(tmp_path, namespace)
    answers: list[dict[str, object]] = []

    async def scenario() -> None:
        async with mcp_session(kitaru.project, kitaru.env) as session:
            for _ in range(2):
                result = await session.call_tool(
                    "kitaru_deployments_invoke",
                    {"flow": FLOW, "inputs": {"topic": "m"}, "idempotency_key": "mcp-1"},
                )
                assert not result.is_error, result
                answers.append(json.loads(result.content[0].text))  # type: ignore[union-attr]

    anyio.run(scenario)
    assert [a["existing"] for a in answers] == [False, True]
    assert answers[0]["exec_id"] == answers[1]["exec_id"] == idempotent_name(FLOW, "mcp-1")
    # The SDK's flow object with the same key and request gets the same execution.
    out = kitaru.python(
        "from flows.research import research_agent\n"
        "h = research_agent.invoke(topic='m', idempotency_key='mcp-1')\n"
        "print(h.exec_id, h.existing)\n"
    ).out.split()
    assert out == [str(answers[0]["exec_id"]), "True"]
    assert len(_invocations(namespace)) == 1


def test_the_generated_curl_with_a_key_creates_once(
    running_operator: object, namespace: str, tmp_path: Path
) -> None:
    kitaru = _project(tmp_path, namespace)
    script = kitaru(f"flow deployments curl {FLOW} --idempotency-key curl-1").out
    name = idempotent_name(FLOW, "curl-1")
    env = {**kitaru.env, "PATH": f"{Path(kitaru_argv()[0]).parent}{os.pathsep}{os.environ['PATH']}"}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=kitaru.project,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    first = run()
    assert first.returncode == 0, first.stderr + first.stdout
    assert json.loads(first.stdout)["metadata"]["name"] == name
    second = run()
    assert second.returncode != 0
    assert json.loads(second.stdout)["reason"] == "AlreadyExists"
    assert [i["metadata"]["name"] for i in _invocations(namespace)] == [name]
    # What the curl made is the key's execution for the CLI too.
    again = kitaru(f"invoke {FLOW} --version 1 --idempotency-key curl-1 -o json").json()["item"]
    assert (again["exec_id"], again["existing"]) == (name, True)


def test_a_finished_run_past_the_window_is_replaced_once(
    running_operator: object, namespace: str, tmp_path: Path
) -> None:
    """After the window a finished run of the key gives way to a new one: deleted with a
    uid precondition, so of concurrent replacers exactly one new run results. (The
    window is shortened to 0 here; a cancelled run is a finished one without a node.)"""
    kitaru = _project(tmp_path, namespace)
    client = _sdk(kitaru)
    first = client.deployments.invoke(FLOW, inputs={"topic": "r"}, idempotency_key="r-1")
    client.executions.cancel(first.exec_id)
    wait_for(lambda: client.executions.get(first.exec_id).status == "cancelled", 30)
    old_uid = json.loads(
        kubectl("get", "finv", first.exec_id, "-o", "json", namespace=namespace).stdout
    )["metadata"]["uid"]
    body = build_invocation(FLOW, inputs={"topic": "other"}, idempotency_key="r-1")

    def replace(_: int) -> tuple[str, bool]:
        created, existing = create_once(client.kube, body, "r-1", window=timedelta(0))
        return created["metadata"]["uid"], existing

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(replace, range(8)))
    (only,) = _invocations(namespace)
    new_uid = only["metadata"]["uid"]  # type: ignore[index]
    assert new_uid != old_uid and only["spec"]["inputs"] == {"topic": "other"}  # type: ignore[index]
    assert {uid for uid, _ in results} == {new_uid}
    assert sorted(existing for _, existing in results) == [False] + [True] * 7
