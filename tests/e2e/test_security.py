"""Security end to end (docs/security.md): minted tokens appear in no output, a run's pod
is admitted under Pod Security `restricted` without a ServiceAccount token, and a flow's
result is data, whatever it looks like."""

from __future__ import annotations

import base64
import json
import shlex
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from chart_support import bind, token_of
from cli_support import Kitaru, mcp_session, new_project
from kitaru.core.names import LABEL_INVOCATION
from support import KUBECONFIG, OperatorProcess, kubectl, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")


def _admin_cluster() -> dict[str, Any]:
    cluster: dict[str, Any] = yaml.safe_load(KUBECONFIG.read_text())["clusters"][0]["cluster"]
    return cluster


def token_kubeconfig(path: Path, token: str) -> Path:
    """A kubeconfig of the local cluster whose only credential is `token`."""
    cluster = _admin_cluster()
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": cluster}],
                "users": [{"name": "sa", "user": {"token": token}}],
                "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "sa"}}],
                "current-context": "sa",
            }
        )
    )
    return path


def bearer_env(base: dict[str, str], namespace: str, token: str, ca: Path) -> dict[str, str]:
    """The connection of a CI job: server, token and project in the environment only."""
    return {
        **base,
        "KUBECONFIG": str(ca.parent / "no-kubeconfig"),
        "KITARU_SERVER_URL": _admin_cluster()["server"],
        "KITARU_AUTH_TOKEN": token,
        "KITARU_CA_FILE": str(ca),
        "KITARU_PROJECT": namespace,
    }


def leaks(tokens: dict[str, str], outputs: dict[str, str]) -> list[str]:
    return [
        f"the {name} token appears in {where}"
        for name, token in tokens.items()
        for where, text in outputs.items()
        if token in text
    ]


def test_minted_tokens_appear_in_no_output(
    roles: str, namespace: str, operator_account: str, tmp_path: Path
) -> None:
    # The client: a CI ServiceAccount with the producer role, its token minted by
    # `kitaru auth token` (the one command that prints a token, by design).
    bind(namespace, "ci-producer", f"{roles}-producer")
    kitaru = new_project(tmp_path, namespace)
    kitaru.env["KITARU_SERVICE_ACCOUNT"] = "ci-producer"
    client_token = kitaru("auth token").out.strip()
    # The operator: the chart's RBAC and a TokenRequest token as its only credential.
    operator_token = token_of(namespace, operator_account)
    tokens = {"client": client_token, "operator": operator_token}
    operator = OperatorProcess(
        namespace,
        tmp_path,
        resync_seconds=5,
        kubeconfig=token_kubeconfig(tmp_path / "operator.kubeconfig", operator_token),
    )
    operator.start()
    try:
        ca = tmp_path / "ca.crt"
        ca.write_bytes(base64.b64decode(_admin_cluster()["certificate-authority-data"]))
        kitaru.env = bearer_env(kitaru.env, namespace, client_token, ca)
        outputs: dict[str, str] = {}

        def run(command: str, *, ok: bool = True) -> dict[str, Any] | None:
            """Run in text and in -o json; keep every output; the JSON item (if ok)."""
            item = None
            for suffix in ("", " -o json"):
                result = kitaru(command + suffix, check=ok)
                assert result.code == (0 if ok else 1), result
                outputs[f"`kitaru {command}{suffix}`"] = result.out + result.err
                if ok and suffix:
                    item = result.json().get("item")
            return item

        run('deploy flows/research.py:research_agent --input \'{"topic": "t"}\'')
        for command in (
            "info",
            "status",
            "flow list",
            "flow show research_agent",
            "flow tag research_agent stable --version 1 --exclusive",
            "flow deployments list research_agent",
            "flow deployments show research_agent --tag stable",
            "flow deployments curl research_agent --tag stable",
            "executions list",
        ):
            run(command)
        started = run("invoke research_agent --tag stable")
        assert started is not None
        exec_id = started["exec_id"]
        run(f"executions get {exec_id}")
        for failing in (
            "invoke research_agent --tag nope",
            "invoke research_agent --input '{\"topic\": 5}'",
            "executions get no-such-run",
            "flow untag research_agent default",
        ):
            run(failing, ok=False)
        # A token the API server refuses is not echoed either.
        refused = Kitaru(kitaru.project, {**kitaru.env, "KITARU_AUTH_TOKEN": client_token + "x"})
        failed = refused("flow list -o json", check=False)
        assert failed.code == 1 and "rejected the credentials" in failed.err
        outputs["a refused token's error"] = failed.err
        # A saved login: the file holds the token (mode 600); the commands do not print it.
        saved = {k: v for k, v in kitaru.env.items() if k != "KITARU_AUTH_TOKEN"}
        login = Kitaru(kitaru.project, saved)
        server = saved["KITARU_SERVER_URL"]
        outputs["`kitaru login`"] = login(
            f"login {server} --api-key {client_token} --project {namespace} --ca-file {ca} -o json"
        ).out
        outputs["`kitaru info` after login"] = login("info -o json").out
        outputs["`kitaru status` after login"] = login("status").out

        async def mcp() -> None:
            async with mcp_session(kitaru.project, kitaru.env) as session:
                for tool, arguments in (
                    ("kitaru_deployments_list", {"flow": "research_agent"}),
                    ("kitaru_deployments_invoke", {"flow": "research_agent", "tag": "stable"}),
                    ("kitaru_executions_get", {"exec_id": exec_id}),
                    ("kitaru_deployments_invoke", {"flow": "research_agent", "tag": "nope"}),
                ):
                    result = await session.call_tool(tool, arguments)
                    outputs[f"MCP {tool}"] = json.dumps(result.model_dump(mode="json"))

        anyio.run(mcp)

        # The operator dispatched the run with its chart RBAC and its token alone.
        wait_for(
            lambda: (
                kubectl("get", "job", exec_id, namespace=namespace, check=False).returncode == 0
            ),
            timeout=60,
            message=f"the operator to create job {exec_id}",
        )
    finally:
        operator.stop()
    outputs["the operator's log"] = operator.log()
    outputs["the namespace's Events"] = kubectl(
        "get", "events", "-o", "json", namespace=namespace
    ).stdout
    outputs["the namespace's objects"] = kubectl(
        "get",
        "flowdeployments,flowroutes,flowinvocations,jobs,pods,configmaps,serviceaccounts",
        "-o",
        "json",
        namespace=namespace,
    ).stdout
    script = json.loads(kitaru("flow deployments curl research_agent --tag stable -o json").out)[
        "item"
    ]["script"]
    assert f'KITARU_SERVER_ACCESS_TOKEN="$(KITARU_PROJECT={namespace} kitaru auth token' in script
    assert not leaks(tokens, outputs), leaks(tokens, outputs)
    assert "Traceback" not in operator.log()


def test_a_run_is_admitted_as_restricted_and_gets_no_token(
    running_operator: Any, namespace: str, tmp_path: Path
) -> None:
    """The operator creates the run's pod (it runs the Jobs it makes: spec.managedBy) in
    a namespace that enforces `restricted` (conftest): being created at all is Pod
    Security admission's verdict."""
    labels = json.loads(kubectl("get", "namespace", namespace, "-o", "json").stdout)["metadata"][
        "labels"
    ]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    kitaru = new_project(tmp_path, namespace)
    kitaru('deploy flows/research.py:research_agent --input \'{"topic": "t"}\'')
    exec_id = kitaru("invoke research_agent -o json").json()["item"]["exec_id"]

    def run_pod() -> dict[str, Any] | None:
        pods = json.loads(
            kubectl(
                "get",
                "pods",
                "-l",
                f"{LABEL_INVOCATION}={exec_id}",
                "-o",
                "json",
                namespace=namespace,
            ).stdout
        )["items"]
        return pods[0] if pods else None

    pod = wait_for(run_pod, timeout=60, message=f"the pod of run {exec_id}")
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert not [v for v in spec.get("volumes", []) if "projected" in v]  # no token volume
    assert not [
        m
        for m in spec["containers"][0].get("volumeMounts", [])
        if "serviceaccount" in m["mountPath"]
    ]


ECHO_FLOWS = """\
import os

from kitaru import flow


@flow
def echo(value: object) -> object:
    return value


@flow
def blob(size: int) -> str:
    return "x" * size


@flow
def deep(levels: int) -> object:
    value: object = "x"
    for _ in range(levels):
        value = [value]
    return value


@flow
def token_mounted() -> bool:
    return os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token")
"""

HOSTILE_RESULTS = [
    "<script>alert(document.cookie)</script><img src=x onerror=alert(1)>",
    "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\x1b[0m\r\x00\x08\x9b31m\u202eevil\x7f",
    '{"ok": false, "type": "Forged", "message": "written by the flow"}',
    {"nested": [["</div>", None, True, -1.5, 10**20]], "json": "[1, 2]", "": "empty key"},
]


def test_a_flows_result_is_data(running_operator: Any, namespace: str, tmp_path: Path) -> None:
    """Needs the node: every run really executes in a container of the runner image."""
    kitaru = new_project(tmp_path, namespace, ECHO_FLOWS)
    for flow in ("echo", "blob", "deep", "token_mounted"):
        kitaru(f"deploy flows/research.py:{flow}")

    for value in HOSTILE_RESULTS:
        inputs = shlex.quote(json.dumps({"value": value}))
        done = kitaru(f"invoke echo --input {inputs} --wait --timeout 120 -o json").json()["item"]
        assert done["result"] == value
        status = json.loads(
            kubectl("get", "finv", done["exec_id"], "-o", "json", namespace=namespace).stdout
        )["status"]
        assert (status["phase"], status["result"]) == ("Completed", value)
        shown = kitaru(f"executions get {done['exec_id']}").out
        assert not [
            c for c in shown if (ord(c) < 0x20 and c not in "\n\t") or c in "\x7f\x9b\u202e"
        ]
        if isinstance(value, str) and "\x1b" in value:
            assert "\\x1b]0;pwned\\x07\\x1b[2J" in shown

    for command, reason, fragment in (
        ("invoke blob --input '{\"size\": 5000}'", "ResultTooLarge", "5026 bytes"),
        ("invoke deep --input '{\"levels\": 65}'", "ResultNotSerializable", "64 levels deep"),
        ("invoke deep --input '{\"levels\": 5000}'", "ResultNotSerializable", "64 levels deep"),
    ):
        failed = kitaru(f"{command} --wait --timeout 120 -o json", check=False)
        assert failed.code == 1, failed
        assert reason in failed.json()["error"]["message"] and fragment in failed.err
    kept = kitaru("invoke deep --input '{\"levels\": 64}' --wait --timeout 120 -o json").json()
    assert kept["item"]["status"] == "completed"

    # The run's pod has no ServiceAccount token to leak.
    mounted = kitaru("invoke token_mounted --wait --timeout 120 -o json").json()["item"]
    assert mounted["result"] is False
