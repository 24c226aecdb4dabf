"""The MCP server in process: schemas, tool errors, and a start that loads no Kubernetes
client. The real stdio session against the cluster is in tests/e2e/test_mcp.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from kitaru.mcp_server import TOOLS, build_server
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult


def test_every_tool_has_a_described_schema() -> None:
    tools = anyio.run(build_server().list_tools)
    assert [tool.name for tool in tools] == [fn.__name__ for fn, _ in TOOLS]
    for tool in tools:
        assert tool.description
        for name, prop in tool.input_schema["properties"].items():
            assert prop.get("description"), f"{tool.name}.{name}"
    get = next(tool for tool in tools if tool.name == "kitaru_deployments_get")
    assert get.input_schema["required"] == ["flow"]
    assert get.input_schema["properties"]["flow"]["pattern"] == "^[a-z][a-z0-9_]*$"


def test_a_client_error_is_a_tool_error_with_the_cli_message() -> None:
    async def call() -> CallToolResult:
        result = await build_server().call_tool("kitaru_deployments_get", {"flow": "Not-A-Flow"})
        assert isinstance(result, CallToolResult)
        return result

    result = anyio.run(call)
    assert result.is_error
    assert result.structured_content == {
        "error": {"message": result.content[0].text, "type": "InvalidName"}  # type: ignore[union-attr]
    }
    assert result.content[0].text.startswith("invalid flow name 'Not-A-Flow'")  # type: ignore[union-attr]


def test_unknown_arguments_are_tool_errors_not_ignored() -> None:
    """A misspelt `input` must not start a run with the deploy-time inputs instead."""
    tools = anyio.run(build_server().list_tools)
    assert all(tool.input_schema["additionalProperties"] is False for tool in tools)

    async def call() -> object:
        return await build_server().call_tool(
            "kitaru_deployments_invoke", {"flow": "research_agent", "input": {"topic": "x"}}
        )

    # In process the SDK raises ToolError; on the wire that is a result with isError.
    with pytest.raises(ToolError, match=r"input\n.*Extra inputs are not permitted"):
        anyio.run(call)


def test_building_the_server_loads_no_kubernetes_client() -> None:
    code = (
        "import sys; from kitaru.mcp_server import build_server; build_server(); "
        "assert 'kubernetes' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "where",
    [
        pytest.param("../../outside/evil.py", id="dot-dot"),
        pytest.param("{outside}/evil.py", id="absolute"),
        pytest.param("../link/evil.py", id="symlink-out"),
    ],
)
def test_deploy_imports_only_files_of_the_project(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tool call must not make the server import and upload any file its user can read
    (issue 23, item 8): the target must lie inside the project the server runs in."""
    project, outside = tmp_path / "project", tmp_path / "outside"
    (project / ".kitaru").mkdir(parents=True)
    (project / "flows").mkdir()
    outside.mkdir()
    marker = tmp_path / "imported"
    (outside / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (project / "link").symlink_to(outside)
    monkeypatch.chdir(project / "flows")  # a subdirectory: the root is where .kitaru is
    target = where.format(outside=outside) + ":research_agent"

    async def call() -> CallToolResult:
        result = await build_server().call_tool("kitaru_deployments_deploy", {"target": target})
        assert isinstance(result, CallToolResult)
        return result

    result = anyio.run(call)
    assert result.is_error
    message = result.content[0].text  # type: ignore[union-attr]
    assert f"is outside the project {project}" in message
    assert result.structured_content["error"]["type"] == "InvalidTarget"  # type: ignore[index]
    assert not marker.exists()
