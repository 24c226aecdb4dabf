"""`kitaru ui` and `kitaru mcp --transport streamable-http` on a user's machine, attacked
the way a web page can attack them (issue 23, item 3): real servers started as a user
starts them, real HTTP, the real API server behind them.

Both act with the user's own Kubernetes identity, often a cluster admin. A page the
user opens can rebind its DNS name to 127.0.0.1 and then talk to them as if it were
their origin, and any page can send them a form POST. Each attack is refused and
leaves nothing created. No pod is needed.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
from chart_support import new_namespace
from cli_support import kitaru_argv, user_env
from kitaru.mcp_server import TOOLS
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from support import (
    create,
    deployment,
    free_port,
    kubectl,
    route,
    wait_for,
)
from ui_support import Answer, Visitor, csrf_token, dashboard

pytestmark = pytest.mark.usefixtures("crds_installed")

FLOW = "research_agent"
INVOKE = f"/flows/{FLOW}/invoke?tag=default"
# The image is never run here: the runs stay unscheduled without an operator.
IMAGE = "registry.invalid/kitaru/runner:never-pulled"
ATTACKER = "attacker.example"


@pytest.fixture(scope="module")
def env(k8s: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A user's environment (the admin kubeconfig) in a project of this module's own,
    holding FLOW v1 routed by `default`."""
    with new_namespace("t-local-servers") as namespace:
        create(deployment(FLOW, 1, image=IMAGE), namespace)
        create(route(FLOW, "default", 1), namespace)
        yield user_env(namespace, tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def served(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `kitaru ui --allowed-host kitaru.test` for the module's tests; yields its URL."""
    workdir = tmp_path_factory.mktemp("ui")
    with dashboard(workdir, env, workdir / "ui.log", "--allowed-host", "kitaru.test") as url:
        yield url


def runs_of(env: dict[str, str]) -> list[str]:
    namespace = env["KITARU_PROJECT"]
    return kubectl("get", "flowinvocations", "-o", "name", namespace=namespace).stdout.split()


def test_a_rebinding_page_is_refused(served: str, env: dict[str, str]) -> None:
    """A page on attacker.example that rebinds its name to 127.0.0.1 reaches the
    dashboard's socket, but its requests name attacker.example in Host: refused, and
    nothing of the page (its form token, the project) is given away."""
    before = runs_of(env)
    port = served.rsplit(":", 1)[1]
    user = Visitor(served)
    page = user.get(INVOKE)
    assert page.status == 200, page
    token = csrf_token(page.body)

    rebound = {"Host": f"{ATTACKER}:{port}"}
    answer = user.get(INVOKE, rebound)
    assert answer.status == 421, answer
    assert token not in answer.body and env["KITARU_PROJECT"] not in answer.body
    answer = user.post(
        INVOKE, {"csrf_token": token}, {**rebound, "Origin": f"http://{ATTACKER}:{port}"}
    )
    assert answer.status == 421, answer
    assert user.get("/", {"Host": ATTACKER}).status == 421
    assert runs_of(env) == before

    # Its own names: loopback, and those given with --allowed-host.
    for name in ("localhost", "127.0.0.1", "kitaru.test"):
        assert user.get("/", {"Host": f"{name}:{port}"}).status == 200, name


def test_a_cross_origin_form_post_is_refused(served: str, env: dict[str, str]) -> None:
    """Even with the browser's cookie and a valid form token (which another origin
    cannot read), a POST whose Origin (or Referer) is not the dashboard's is refused."""
    before = runs_of(env)
    browser = Visitor(served)
    token = csrf_token(browser.get(INVOKE).body)
    elsewhere = f"http://{ATTACKER}/page.html"
    for headers, why in (
        ({"Origin": f"http://{ATTACKER}"}, f"it comes from 'http://{ATTACKER}'"),
        ({"Origin": "null"}, "names no Origin"),
        ({"Origin": "", "Referer": elsewhere}, f"it comes from '{elsewhere}'"),
        ({"Origin": ""}, "names no Origin"),
    ):
        answer = browser.post(INVOKE, {"csrf_token": token}, headers)
        assert (answer.status, why in answer.body) == (403, True), (headers, answer)
    assert runs_of(env) == before

    # From the dashboard's own page (its Origin, or its Referer alone), it works.
    assert browser.post(INVOKE, {"csrf_token": token}).status == 303
    same_page = {"Origin": "", "Referer": f"{served}{INVOKE}"}
    assert browser.post(INVOKE, {"csrf_token": token}, same_page).status == 303
    assert len(runs_of(env)) == len(before) + 2


def test_a_form_token_is_worth_nothing_without_its_browser(
    served: str, env: dict[str, str]
) -> None:
    """The form token is bound to the HttpOnly cookie of the browser it was served to:
    read from a page (or a screenshot), it fails from any other browser."""
    before = runs_of(env)
    victim = Visitor(served)
    first = victim.get(INVOKE)
    cookie = first.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie, cookie
    token = csrf_token(first.body)
    assert "set-cookie" not in victim.get(INVOKE).headers, "the cookie is set once, then kept"
    other = Visitor(served)
    answer = other.post(INVOKE, {"csrf_token": token})
    assert answer.status == 400 and "the form has expired" in answer.body
    other.get(INVOKE)  # now with a cookie of its own, still not the victim's token
    assert other.cookie("kitaru_csrf") != victim.cookie("kitaru_csrf")
    answer = other.post(INVOKE, {"csrf_token": token})
    assert answer.status == 400 and "the form has expired" in answer.body
    assert runs_of(env) == before


def test_no_other_site_may_frame_the_dashboard(served: str) -> None:
    """Clickjacking: a page cannot show the dashboard in a frame and lure clicks onto it."""
    headers = Visitor(served).get("/").headers
    assert headers["content-security-policy"] == "frame-ancestors 'none'"
    assert headers["x-frame-options"] == "DENY"


# --- kitaru mcp over HTTP -------------------------------------------------------------

INITIALIZE = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "a web page", "version": "1"},
        },
    }
).encode()
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
PRINTED_TOKEN = re.compile(r"'Authorization: Bearer ([A-Za-z0-9_-]+)'")


class McpServers:
    """`kitaru mcp --transport streamable-http ARGS` processes as a user starts them."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, env: dict[str, str] | None = None) -> tuple[str, Path]:
        """The server's URL (on loopback, whatever it binds) and its log, once it listens."""
        port = free_port()
        log = self.workdir / f"mcp-{port}.log"
        argv = [*kitaru_argv(), "mcp", "--transport", "streamable-http", "--port", str(port)]
        with log.open("w") as out:
            proc = subprocess.Popen(
                [*argv, *args],
                cwd=self.workdir,
                env={**self.env, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        wait_for(
            lambda: proc.poll() is not None or listening(port),
            timeout=30,
            message=f"kitaru mcp on port {port}",
        )
        assert proc.poll() is None, log.read_text()
        return f"http://127.0.0.1:{port}", log

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.wait(timeout=10)


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def mcp(env: dict[str, str], tmp_path: Path) -> Iterator[McpServers]:
    servers = McpServers(env, tmp_path)
    yield servers
    servers.stop()


def initialize(url: str, headers: dict[str, str]) -> Answer:
    """An MCP `initialize` request as raw HTTP (what a page's fetch() would send)."""
    return Visitor(url).request("POST", "/mcp", headers={**MCP_HEADERS, **headers}, body=INITIALIZE)


def test_mcp_refuses_rebinding_pages_and_other_origins(mcp: McpServers) -> None:
    """On loopback, where no token is needed: the SDK's own transport checks, given the
    server's names, refuse another Host and another browser Origin."""
    url, _ = mcp.start()
    port = url.rsplit(":", 1)[1]
    assert initialize(url, {"Host": f"{ATTACKER}:{port}"}).status == 421
    assert initialize(url, {"Origin": f"http://{ATTACKER}"}).status == 403
    assert initialize(url, {"Origin": url}).status == 200


def list_flows_with(url: str, token: str) -> dict[str, object]:
    """A real MCP client session with the bearer token: the tools, and one call."""

    async def session() -> dict[str, object]:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http,
            streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as client,
        ):
            await client.initialize()
            listed = {tool.name for tool in (await client.list_tools()).tools}
            assert listed == {fn.__name__ for fn, _ in TOOLS}
            result = await client.call_tool("kitaru_deployments_list", {"flow": FLOW})
            assert not result.is_error, result
            return dict(result.structured_content or {})

    return anyio.run(session)


def test_mcp_on_a_network_address_needs_its_token(mcp: McpServers) -> None:
    """Bound to every interface without a token of its own (KITARU_MCP_TOKEN or
    --token-file), the server makes one, prints it once, and refuses every caller
    without it."""
    url, log = mcp.start("--host", "0.0.0.0")
    printed = PRINTED_TOKEN.findall(log.read_text())
    assert len(printed) == 1, log.read_text()
    token = printed[0]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"}):
        answer = initialize(url, headers)
        assert answer.status == 401, (headers, answer)
        assert answer.headers["www-authenticate"].startswith("Bearer")
    assert list_flows_with(url, token)["count"] == 1
    assert log.read_text().count(token) == 1, "the token is printed once, at start"
