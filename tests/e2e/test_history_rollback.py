"""Rollback refuses a route the history has not caught up with (HistoryNotCurrent),
through the CLI, the SDK and the MCP server: the operator is stopped while kubectl moves
the tag, so the route is not what the history last recorded. Nothing is written; once
the operator records the move, the same rollback goes through. No pod runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from cli_support import Kitaru, mcp_session, new_project
from kitaru.client import KitaruClient
from kitaru.client.connection import resolve_connection
from kitaru.client.errors import KitaruError
from support import OperatorProcess, create, deployment, kubectl, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

FLOW = "research_agent"
STABLE = "research-agent.stable"
NOT_CURRENT = "changed after the last recorded change"


def stable_versions(namespace: str) -> list[int]:
    proc = kubectl("get", "froute", STABLE, "-o", "json", namespace=namespace)
    return list(json.loads(proc.stdout)["spec"]["versions"])


def recorded_moves(kitaru: Kitaru) -> list[list[int]]:
    items = kitaru(f"flow history {FLOW} stable -o json").json()["items"]
    return [c["toVersions"] for c in items]


def sdk_client(kitaru: Kitaru) -> KitaruClient:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", kitaru.env["XDG_CONFIG_HOME"])
        return KitaruClient(resolve_connection(kitaru.env))


def mcp_rollback(kitaru: Kitaru) -> tuple[bool, str]:
    result: dict[str, Any] = {}

    async def call() -> None:
        async with mcp_session(kitaru.project, kitaru.env) as session:
            answer = await session.call_tool(
                "kitaru_deployments_rollback", {"flow": FLOW, "tag": "stable"}
            )
            result["error"] = bool(answer.is_error)
            result["text"] = "".join(getattr(c, "text", "") for c in answer.content)

    anyio.run(call)
    return result["error"], result["text"]


def test_rollback_refuses_an_unrecorded_change(namespace: str, tmp_path: Path) -> None:
    operator = OperatorProcess(namespace, tmp_path / "operator", resync_seconds=5)
    (tmp_path / "operator").mkdir()
    for version in (1, 2):
        create(deployment(FLOW, version), namespace)
    operator.start()
    try:
        kitaru = new_project(tmp_path / "user", namespace)
        kitaru(f"flow tag {FLOW} stable --version 1 --exclusive")
        kitaru(f"flow tag {FLOW} stable --version 2 --exclusive --reason 'release 2'")
        wait_for(lambda: recorded_moves(kitaru) == [[1], [2]], timeout=30, message="2 moves")

        operator.stop()
        kubectl(
            "patch", "froute", STABLE, "--type=merge", "-p", '{"spec": {"versions": [1]}}',
            namespace=namespace,
        )  # fmt: skip

        cli = kitaru(f"flow rollback {FLOW} stable -o json", check=False)
        assert (cli.code, cli.out) == (1, ""), cli
        error = json.loads(cli.err)["error"]
        assert error["type"] == "HistoryNotCurrent" and NOT_CURRENT in error["message"], error
        with pytest.raises(KitaruError) as caught:
            sdk_client(kitaru).deployments.rollback(FLOW, "stable")
        assert (caught.value.kind, NOT_CURRENT in caught.value.message) == (
            "HistoryNotCurrent",
            True,
        )
        is_error, text = mcp_rollback(kitaru)
        assert is_error and NOT_CURRENT in text, text
        assert stable_versions(namespace) == [1]

        operator.start()  # records the kubectl move; rollback now undoes it
        wait_for(lambda: recorded_moves(kitaru) == [[1], [2], [1]], timeout=30)
        done = kitaru(f"flow rollback {FLOW} stable")
        assert "routes to v2" in done.out, done
        assert stable_versions(namespace) == [2]
        wait_for(lambda: recorded_moves(kitaru) == [[1], [2], [1], [2]], timeout=30)
    finally:
        operator.stop()
    assert "Traceback" not in operator.log(), operator.log()
