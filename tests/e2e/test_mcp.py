"""`kitaru mcp` through a real MCP client session: the SDK's stdio client spawns the
server, which talks to the local cluster with the operator running.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from cli_support import kitaru_argv, mcp_session, user_env
from kitaru.core.manifests import build_deployment
from kitaru.mcp_server import TOOLS
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult
from support import create, deployment, kubectl, runner_image, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

FLOW_V1 = """\
from kitaru import flow


@flow
def research_agent(topic: str) -> str:
    return f"v1 notes on {topic}"
"""

FLOW_V2 = FLOW_V1.replace("v1 notes on", "v2 report on")


def run_session(cwd: Path, project: str, scenario: Callable[[Tools], Awaitable[None]]) -> None:
    async def main() -> None:
        async with mcp_session(cwd, user_env(project, cwd / ".home")) as session:
            await scenario(Tools(session))

    anyio.run(main)


class Tools:
    """Calls tools and asserts on their outcome."""

    def __init__(self, session: ClientSession) -> None:
        self.session = session

    async def call(self, name: str, **arguments: Any) -> CallToolResult:
        return await self.session.call_tool(name, arguments)

    async def ok(self, name: str, **arguments: Any) -> dict[str, Any]:
        result = await self.call(name, **arguments)
        assert not result.is_error, result.content
        assert result.structured_content is not None
        return result.structured_content

    async def error(self, name: str, **arguments: Any) -> dict[str, str]:
        result = await self.call(name, **arguments)
        assert result.is_error, result.structured_content
        assert result.structured_content is not None, result.content
        error: dict[str, str] = result.structured_content["error"]
        # The text the assistant reads is the CLI's message, nothing added.
        assert result.content[0].text == error["message"]  # type: ignore[union-attr]
        return error


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """A `kitaru init` project holding the product page's flow."""
    subprocess.run([*kitaru_argv(), "init"], cwd=tmp_path, check=True, capture_output=True)
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "research.py").write_text(FLOW_V1)
    return tmp_path


def test_tools_list_shows_every_tool_with_a_schema(tmp_path: Path) -> None:
    async def scenario(tools: Tools) -> None:
        listed = {tool.name: tool for tool in (await tools.session.list_tools()).tools}
        assert set(listed) == {fn.__name__ for fn, _ in TOOLS}
        for tool in listed.values():
            assert tool.description
            assert tool.input_schema["type"] == "object"
            for name, prop in tool.input_schema["properties"].items():
                assert prop.get("description"), f"{tool.name}.{name} has no description"
        invoke = listed["kitaru_deployments_invoke"].input_schema
        retention = {"ttl_seconds_after_finished", "history_limit"}
        selectors = {"flow", "tag", "version", "inputs", "key", "idempotency_key"}
        assert set(invoke["properties"]) == selectors | retention
        assert invoke["required"] == ["flow"]
        deploy = listed["kitaru_deployments_deploy"].input_schema
        assert (
            set(deploy["properties"])
            == {
                "target",
                "inputs",
                "tag",
                "exclusive",
                "force",
                "image",
                "max_concurrency",
            }
            | retention
        )
        prune = listed["kitaru_deployments_prune"].input_schema
        assert prune["required"] == ["flow", "keep"]
        assert listed["kitaru_executions_list"].annotations.read_only_hint  # type: ignore[union-attr]
        assert listed["kitaru_deployments_list"].annotations.read_only_hint  # type: ignore[union-attr]

    run_session(tmp_path, "unused", scenario)


@pytest.mark.cluster
def test_product_example_through_mcp(
    cluster: Any, namespace: str, running_operator: Any, project_dir: Path
) -> None:
    """Producer deploys v1 and canary v2 and promotes stable; the consumer's structured
    input from the product page runs v2 to completion."""
    target = "flows/research.py:research_agent"

    async def scenario(tools: Tools) -> None:
        v1 = await tools.ok(
            "kitaru_deployments_deploy", target=target, inputs={"topic": "durable agents"}
        )
        assert v1["version"] == 1
        (project_dir / "flows" / "research.py").write_text(FLOW_V2)
        v2 = await tools.ok(
            "kitaru_deployments_deploy",
            target=target,
            inputs={"topic": "durable agents"},
            tag="canary",
            exclusive=True,
        )
        assert v2["version"] == 2
        await tools.ok(
            "kitaru_deployments_tag", flow="research_agent", tag="stable", version=2, exclusive=True
        )

        listed = await tools.ok("kitaru_deployments_list", flow="research_agent")
        assert listed["count"] == 2
        tags = {item["version"]: {t["tag"] for t in item["tags"]} for item in listed["items"]}
        assert tags == {1: {"default"}, 2: {"canary", "stable"}}
        stable = await tools.ok("kitaru_deployments_get", flow="research_agent", tag="stable")
        assert stable["version"] == 2
        default = await tools.ok("kitaru_deployments_get", flow="research_agent")
        assert default["version"] == 1

        execution = await tools.ok(
            "kitaru_deployments_invoke",
            **{
                "flow": "research_agent",
                "tag": "stable",
                "inputs": {"topic": "deployment routing"},
            },
        )
        assert execution["version"] == 2
        done = await tools.ok("kitaru_executions_wait", exec_id=execution["exec_id"], timeout=120)
        assert done["status"] == "completed"
        assert done["result"] == "v2 report on deployment routing"
        fetched = await tools.ok("kitaru_executions_get", exec_id=execution["exec_id"])
        assert fetched["result"] == done["result"]
        logs = await tools.ok("kitaru_executions_logs", exec_id=execution["exec_id"])
        assert isinstance(logs["logs"], str)

    run_session(project_dir, namespace, scenario)


@pytest.mark.cluster
def test_resolution_and_input_errors_are_tool_errors(
    cluster: Any, namespace: str, running_operator: Any, project_dir: Path
) -> None:
    target = "flows/research.py:research_agent"
    flow = "research_agent"

    async def scenario(tools: Tools) -> None:
        error = await tools.error("kitaru_deployments_invoke", flow=flow)
        assert "has no deployments yet" in error["message"], error
        error = await tools.error("kitaru_deployments_get", flow=flow)
        assert "has no deployments yet" in error["message"], error

        for _ in range(2):
            await tools.ok("kitaru_deployments_deploy", target=target, inputs={"topic": "x"})
        for version in (1, 2):
            await tools.ok("kitaru_deployments_tag", flow=flow, tag="benchmark", version=version)

        error = await tools.error("kitaru_deployments_invoke", flow=flow, tag="nightly")
        assert f"flow '{flow}' has no tag 'nightly'" in error["message"], error
        error = await tools.error("kitaru_deployments_invoke", flow=flow, version=9)
        assert f"flow '{flow}' has no version 9" in error["message"], error
        error = await tools.error("kitaru_deployments_invoke", flow=flow, tag="benchmark")
        assert "routes to versions 1, 2" in error["message"], error
        error = await tools.error("kitaru_deployments_get", flow=flow, tag="benchmark")
        assert "routes to versions 1, 2" in error["message"], error
        error = await tools.error(
            "kitaru_deployments_invoke", flow=flow, tag="benchmark", version=1
        )
        assert "not both" in error["message"], error
        error = await tools.error(
            "kitaru_deployments_invoke", flow=flow, version=1, inputs={"topic": 5}
        )
        assert "invalid inputs" in error["message"] and "topic" in error["message"], error
        # The version routed as 'default' (exclusive) cannot be deleted.
        error = await tools.error("kitaru_deployments_delete", flow=flow, version=2)
        assert error["message"], error

    run_session(project_dir, namespace, scenario)


@pytest.mark.cluster
def test_no_default_route_is_a_tool_error(namespace: str, project_dir: Path) -> None:
    """A version applied with kubectl (GitOps) while no operator runs to bootstrap
    'default': the flow has deployments but no default route."""
    manifest = build_deployment(
        "research_agent", 1, entrypoint="research:research_agent", image=runner_image()
    )
    kubectl("create", "-f", "-", namespace=namespace, input=json.dumps(manifest))

    async def scenario(tools: Tools) -> None:
        error = await tools.error("kitaru_deployments_invoke", flow="research_agent")
        assert "none is routed as 'default'" in error["message"], error
        error = await tools.error("kitaru_deployments_get", flow="research_agent")
        assert "none is routed as 'default'" in error["message"], error
        # An explicit version still works.
        pinned = await tools.ok("kitaru_deployments_get", flow="research_agent", version=1)
        assert pinned["version"] == 1

    run_session(project_dir, namespace, scenario)


SLOW_FLOW = """\
import time

from kitaru import flow


@flow
def slow_agent(seconds: int) -> int:
    time.sleep(seconds)
    return seconds
"""


@pytest.mark.cluster
def test_untag_delete_and_cancel(namespace: str, running_operator: Any, project_dir: Path) -> None:
    (project_dir / "flows" / "slow.py").write_text(SLOW_FLOW)
    flow = "slow_agent"

    async def scenario(tools: Tools) -> None:
        await tools.ok(
            "kitaru_deployments_deploy", target="flows/slow.py:slow_agent", inputs={"seconds": 600}
        )
        v2 = await tools.ok(
            "kitaru_deployments_deploy",
            target="flows/slow.py:slow_agent",
            inputs={"seconds": 600},
            tag="experiment",
        )
        assert v2["version"] == 2
        route = await tools.ok("kitaru_deployments_untag", flow=flow, tag="experiment", version=2)
        assert route["versions"] == []
        error = await tools.error("kitaru_deployments_untag", flow=flow, tag="default")
        assert "default" in error["message"], error
        deleted = await tools.ok("kitaru_deployments_delete", flow=flow, version=2)
        assert deleted["version"] == 2
        listed = await tools.ok("kitaru_deployments_list", flow=flow)
        assert [item["version"] for item in listed["items"]] == [1]

        execution = await tools.ok("kitaru_deployments_invoke", flow=flow)
        exec_id = execution["exec_id"]
        wait_for_status = {"running", "pending"}
        assert (await tools.ok("kitaru_executions_get", exec_id=exec_id))[
            "status"
        ] in wait_for_status
        await tools.ok("kitaru_executions_cancel", exec_id=exec_id)
        error = await tools.error("kitaru_executions_wait", exec_id=exec_id, timeout=60)
        assert error["message"].startswith(f"execution {exec_id} cancelled"), error
        assert (await tools.ok("kitaru_executions_get", exec_id=exec_id))["status"] == "cancelled"
        error = await tools.error("kitaru_executions_get", exec_id="no-such-execution")
        assert "no-such-execution" in error["message"], error

    run_session(project_dir, namespace, scenario)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.cluster
def test_streamable_http_transport(namespace: str, tmp_path: Path) -> None:
    """`kitaru mcp --transport streamable-http` serves the same tools over HTTP on
    loopback, with the active connection."""
    create(deployment("research_agent", 1), namespace)
    port = free_port()
    log = tmp_path / "mcp.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*kitaru_argv(), "mcp", "--transport", "streamable-http", "--port", str(port)],
            cwd=tmp_path,
            env=user_env(namespace, tmp_path / ".home"),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def ready() -> str:
            if proc.poll() is not None:
                return "exited"
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return "listening"

        state = wait_for(ready, timeout=30, message=f"kitaru mcp to listen on port {port}")
        assert state == "listening", log.read_text()

        async def main() -> None:
            url = f"http://127.0.0.1:{port}/mcp"
            async with (
                streamable_http_client(url) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                listed = {tool.name for tool in (await session.list_tools()).tools}
                assert listed == {fn.__name__ for fn, _ in TOOLS}
                tools = Tools(session)
                versions = await tools.ok("kitaru_deployments_list", flow="research_agent")
                assert versions["count"] == 1, versions
                assert versions["items"][0]["version"] == 1
                error = await tools.error(
                    "kitaru_deployments_get", flow="research_agent", version=9
                )
                assert "has no version 9" in error["message"], error

        anyio.run(main)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
