"""Weighted, sticky routes on every surface, with runs on the real node (issue 14 item 3).

A split tag sends each run to one of its versions by weight; the same routing key always
runs the same version, whichever surface started it: the CLI (`--key`), the SDK
(`routing_key=`), the MCP server (`key`), kubectl (`spec.routingKey`) and the printed
curl (`--key`). The 1 000-invocation distribution is measured at the API tier
(tests/api/test_split_routes.py), where no container has to start for each.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import anyio
from cli_support import kitaru_argv, mcp_session, new_project
from kitaru.client import KitaruClient
from kitaru.client.connection import resolve_connection
from kitaru.core.routing import pick_version, split_bucket
from support import create, kubectl, wait_for

FLOW = "research_agent"
DEPLOY = f'deploy flows/research.py:{FLOW} --input \'{{"topic": "t"}}\''


def key_for(version: int, split: tuple[tuple[int, int], ...]) -> str:
    """A routing key that lands on `version` under `split`."""
    return next(
        key
        for i in range(1000)
        if pick_version(split, split_bucket(FLOW, key := f"user-{i}")) == version
    )


def test_a_split_tag_on_every_surface(
    running_operator: object, namespace: str, tmp_path: Path
) -> None:
    kitaru = new_project(tmp_path, namespace)
    kitaru(DEPLOY)
    kitaru(DEPLOY.replace("deploy", "build", 1))
    even = ((1, 50), (2, 50))
    to_v1, to_v2 = key_for(1, even), key_for(2, even)

    # CLI: split, show, invoke by key (twice: the same version), history.
    split = kitaru(f"flow tag {FLOW} stable --split 1=50,2=50 --reason 'canary v2'")
    assert split.out.strip() == (
        f"Split {FLOW} stable (weighted); stable now routes to v1 50%, v2 50%"
    )
    item = kitaru(f"flow tag {FLOW} stable --split 1=50,2=50 -o json").json()["item"]
    assert (item["mode"], item["split"]) == (
        "weighted",
        [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}],
    )
    shown = kitaru(f"flow show {FLOW}").out
    assert "weighted" in shown and "v1 50%, v2 50%" in shown
    wait_for(
        lambda: "stable (50%)" in kitaru(f"flow deployments list {FLOW}").out,
        timeout=30,
        message="versions list their share of stable",
    )
    for _ in range(2):
        run = kitaru(
            f'invoke {FLOW} --tag stable --key {to_v2} --input \'{{"topic": "ab"}}\' '
            "--wait --timeout 120 -o json"
        ).json()["item"]
        assert (run["status"], run["version"], run["result"]) == ("completed", 2, "notes on ab")
    got = kitaru(f"executions get {run['exec_id']}").out
    assert "by routing key" in got and "split 1=50,2=50: bucket" in got, got
    history = kitaru(f"flow history {FLOW} stable").out
    assert "1=50,2=50" in history and "canary v2" in history

    # SDK: the handle names the version the key picks, and that version runs.
    with_env = {**os.environ, **kitaru.env}
    client = KitaruClient(resolve_connection(with_env))
    handle = client.deployments.invoke(FLOW, tag="stable", routing_key=to_v1)
    assert handle.version == 1
    assert handle.wait(timeout=120) == "notes on t"
    assert client.executions.get(handle.exec_id).resolved_version == 1

    # MCP: reweight, then invoke with a key.
    async def mcp() -> dict[str, Any]:
        async with mcp_session(kitaru.project, kitaru.env) as session:
            tagged = await session.call_tool(
                "kitaru_deployments_tag",
                {"flow": FLOW, "tag": "stable", "split": {"1": 10, "2": 90}},
            )
            assert not tagged.is_error, tagged
            started = await session.call_tool(
                "kitaru_deployments_invoke",
                {"flow": FLOW, "tag": "stable", "key": key_for(1, ((1, 10), (2, 90)))},
            )
            assert not started.is_error, started
            return json.loads("".join(getattr(c, "text", "") for c in started.content))

    started = anyio.run(mcp)
    assert started["version"] == 1
    done = kitaru(f"executions wait {started['exec_id']} --timeout 120 -o json").json()["item"]
    assert (done["status"], done["resolved_version"]) == ("completed", 1)

    # kubectl: a FlowInvocation with a routing key.
    ninety = ((1, 10), (2, 90))
    create(
        {
            "apiVersion": "kitaru.dev/v1alpha1",
            "kind": "FlowInvocation",
            "metadata": {"name": "keyed-run"},
            "spec": {"flow": FLOW, "tag": "stable", "routingKey": key_for(2, ninety)},
        },
        namespace,
    )
    done = kitaru("executions wait keyed-run --timeout 120 -o json").json()["item"]
    assert (done["status"], done["resolved_version"]) == ("completed", 2)
    table = kubectl("get", "froute", namespace=namespace).stdout
    assert "weighted" in table and "1=10,2=90" in table

    # curl: not pinned (that would defeat the split), the key in the body; run for real.
    key = key_for(1, ninety)
    script = kitaru(f"flow deployments curl {FLOW} --tag stable --key {key}").out
    assert f"# Tag 'stable' of flow '{FLOW}' is split 1=10,2=90 (version=percent)" in script
    env = {**kitaru.env, "PATH": f"{Path(kitaru_argv()[0]).parent}{os.pathsep}{os.environ['PATH']}"}
    posted = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=kitaru.project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert posted.returncode == 0, posted.stderr + posted.stdout
    spec = json.loads(posted.stdout)["spec"]
    assert (spec["tag"], spec["routingKey"]) == ("stable", key) and "version" not in spec
    exec_id = json.loads(posted.stdout)["metadata"]["name"]
    done = kitaru(f"executions wait {exec_id} --timeout 120 -o json").json()["item"]
    assert (done["status"], done["resolved_version"]) == ("completed", 1)
