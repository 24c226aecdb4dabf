"""The inspecting commands of the CLI, run as a new user would (a `kitaru` subprocess):
the connection (`status`, `info`), flows and versions (`flow list|show`,
`flow deployments show|logs`) and executions (`executions list|get|logs|wait|cancel`),
each as text and as a JSON envelope."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from cli_support import Kitaru, Result, new_project, user_env
from support import KUBECONFIG, Cluster, kubectl, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

FLOWS = """import time

from kitaru import flow


@flow
def research_agent(topic: str) -> str:
    print(f"researching {topic}")
    if topic == "slow":
        time.sleep(300)
    return f"notes on {topic}"
"""


def envelope(result: Result, command: str, *, many: bool = False) -> Any:
    """The JSON envelope of a successful command; its item (or items)."""
    assert result.code == 0, result
    data = json.loads(result.out)
    keys = {"command", "items", "count"} if many else {"command", "item"}
    assert set(data) == keys, data
    assert data["command"] == command, data
    if many:
        assert data["count"] == len(data["items"])
        return data["items"]
    return data["item"]


def error_envelope(result: Result, command: str) -> dict[str, Any]:
    assert result.code == 1, result
    assert result.out == ""
    data = json.loads(result.err)
    assert set(data) == {"command", "error"} and data["command"] == command, data
    assert set(data["error"]) == {"message", "type"}, data
    error: dict[str, Any] = data["error"]
    return error


def fields_of(text: str) -> dict[str, str]:
    """`key: value` lines as a dict."""
    pairs = (line.split(":", 1) for line in text.splitlines())
    return {key: value.strip() for key, value in pairs}


# --- the connection ---------------------------------------------------------------------


def ca_file(directory: Path) -> Path:
    """The cluster's CA, as a user would save it from their kubeconfig."""
    config = json.loads(KUBECONFIG.read_text())
    data = config["clusters"][0]["cluster"]["certificate-authority-data"]
    path = directory / "ca.crt"
    path.write_bytes(base64.b64decode(data))
    return path


def mint_token(namespace: str, account: str) -> str:
    """A real ServiceAccount that may read the project's flows, and a short-lived token."""
    kubectl("create", "serviceaccount", account, namespace=namespace)
    kubectl(
        "create",
        "role",
        "kitaru-viewer",
        "--verb=get,list,watch",
        "--resource=flowdeployments.kitaru.dev,flowroutes.kitaru.dev,flowinvocations.kitaru.dev",
        namespace=namespace,
    )
    kubectl(
        "create",
        "rolebinding",
        "kitaru-viewer",
        "--role=kitaru-viewer",
        f"--serviceaccount={namespace}:{account}",
        namespace=namespace,
    )
    wait_for(
        lambda: (
            kubectl(
                "auth",
                "can-i",
                "list",
                "flowroutes.kitaru.dev",
                f"--as=system:serviceaccount:{namespace}:{account}",
                namespace=namespace,
                check=False,
            ).stdout.strip()
            == "yes"
        ),
        30,
        message="the RoleBinding is in force",
    )
    return kubectl("create", "token", account, "--duration=10m", namespace=namespace).stdout.strip()


def test_status_and_info_show_each_value_and_its_source(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    token = mint_token(namespace, "inspector")
    assert token.count(".") == 2  # a JWT
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in user_env(namespace, tmp_path).items() if k != "KUBECONFIG"}
    env.update(
        HOME=str(home),  # no ~/.kube/config, no saved login: the environment only
        KITARU_SERVER_URL=cluster.api_url,
        KITARU_AUTH_TOKEN=token,
        KITARU_PROJECT=namespace,
        KITARU_CA_FILE=str(ca_file(tmp_path)),
    )
    kitaru = Kitaru(tmp_path, env)

    rows_expected = {
        "server": (cluster.api_url, "env KITARU_SERVER_URL"),
        "auth token": (token[:4] + "********", "env KITARU_AUTH_TOKEN"),
        "project": (namespace, "env KITARU_PROJECT"),
        "ca file": (env["KITARU_CA_FILE"], "env KITARU_CA_FILE"),
    }

    info = kitaru("info")
    assert token not in info.out + info.err
    lines = info.out.splitlines()
    assert lines[0].split() == ["SETTING", "VALUE", "SOURCE"]
    for name, (value, source) in rows_expected.items():
        line = next(line for line in lines if line.startswith(name + "  "))
        assert value in line and line.endswith(source), line
    assert "missing" not in info.out

    item = envelope(kitaru("info -o json"), "info")
    assert set(item) == {"connection", "missing"} and item["missing"] == []
    rows = {r["name"]: (r["value"], r["source"]) for r in item["connection"]}
    assert {k: rows[k] for k in rows_expected} == rows_expected

    status = kitaru("status")
    assert token not in status.out + status.err
    first = status.out.splitlines()[0]
    assert first == (
        f"Connected to {cluster.api_url} (Kubernetes v1.34.4), project {namespace}: 0 flow(s)"
    )
    assert "env KITARU_AUTH_TOKEN" in status.out and token[:4] + "********" in status.out

    result = kitaru("status -o json")
    assert token not in result.out
    item = envelope(result, "status")
    assert set(item) == {"connection", "server_version", "project", "flows"}
    assert (item["server_version"], item["project"], item["flows"]) == ("v1.34.4", namespace, 0)
    rows = {r["name"]: (r["value"], r["source"]) for r in item["connection"]}
    assert {k: rows[k] for k in rows_expected} == rows_expected

    # A missing piece: commands that need the server fail at once, naming what to set;
    # `kitaru info` still shows what it sees, and what is missing.
    cases = {
        "KITARU_PROJECT": "no project: set KITARU_PROJECT (the Kubernetes namespace)",
        "KITARU_AUTH_TOKEN": f"no credentials for {cluster.api_url}: set KITARU_AUTH_TOKEN",
        "KITARU_SERVER_URL": "no server: set KITARU_SERVER_URL",
    }
    for unset, needle in cases.items():
        partial = Kitaru(tmp_path, {k: v for k, v in env.items() if k != unset})
        for command in ("status", "flow list"):
            failed = partial(command, check=False)
            assert failed.code == 1, failed
            assert failed.out == ""
            assert failed.err.startswith("Error: the Kitaru connection is incomplete: ")
            assert needle in failed.err, failed.err
            assert token not in failed.err
            error = error_envelope(partial(command + " -o json", check=False), command)
            assert error["type"] == "KitaruConnectionError" and needle in error["message"]
        shown = partial("info")
        assert f"missing: {needle}" in shown.out, shown.out
        assert token not in shown.out
        item = envelope(partial("info -o json"), "info")
        assert any(needle in m for m in item["missing"]), item

    # The API server's CA is the one piece the connection cannot detect as missing: an
    # untrusted certificate says which setting supplies it.
    no_ca = Kitaru(tmp_path, {k: v for k, v in env.items() if k != "KITARU_CA_FILE"})
    failed = no_ca("status", check=False)
    assert failed.code == 1 and failed.out == "", failed
    assert failed.err.startswith(f"Error: cannot reach the API server {cluster.api_url}: ")
    assert "certificate verify failed" in failed.err and "set KITARU_CA_FILE" in failed.err
    assert token not in failed.err


# --- flows, versions and executions -------------------------------------------------------


@pytest.fixture
def kitaru(running_operator: object, namespace: str, tmp_path: Path) -> Kitaru:
    project = new_project(tmp_path, namespace, FLOWS)
    project('deploy flows/research.py:research_agent --input \'{"topic": "durable agents"}\'')
    project("deploy flows/research.py:research_agent --tag canary --exclusive")
    return project


def execution_of(kitaru: Kitaru, command: str) -> str:
    exec_id: str = envelope(kitaru(command + " -o json"), "invoke")["exec_id"]
    return exec_id


def test_flow_list_show_and_deployment_show(kitaru: Kitaru) -> None:
    listed = kitaru("flow list").out.splitlines()
    assert listed[0].split() == ["FLOW", "VERSIONS", "DEFAULT", "TAGS"]
    assert listed[1].split() == ["research_agent", "2", "1", "default,", "canary"]
    items = envelope(kitaru("flow list -o json"), "flow list", many=True)
    assert items == [
        {
            "flow": "research_agent",
            "versions": [1, 2],
            "default_version": 1,
            "tags": ["default", "canary"],
        }
    ]

    shown = kitaru("flow show research_agent").out
    assert shown.startswith("Flow research_agent\n")
    lines = shown.splitlines()
    assert next(li for li in lines if li.startswith("default ")).split()[:3] == [
        "default",
        "exclusive",
        "1",
    ]
    assert next(li for li in lines if li.startswith("canary ")).split()[:3] == [
        "canary",
        "exclusive",
        "2",
    ]
    assert any(
        li.startswith("research_agent  1") and "kitaru::research_agent::v1" in li for li in lines
    )
    item = envelope(kitaru("flow show research_agent -o json"), "flow show")
    assert set(item) == {"flow", "routes", "deployments"} and item["flow"] == "research_agent"
    assert [(r["tag"], r["versions"]) for r in item["routes"]] == [
        ("default", [1]),
        ("canary", [2]),
    ]
    assert [d["version"] for d in item["deployments"]] == [1, 2]

    text = kitaru("flow deployments show research_agent --version 1").out
    fields = fields_of(text)
    assert fields["flow"] == "research_agent" and fields["version"] == "1"
    assert fields["name"] == "research-agent-v1"
    assert fields["snapshot"] == "kitaru::research_agent::v1"
    assert fields["tags"] == "default"
    assert fields["entrypoint"].endswith(":research_agent")
    assert json.loads(fields["inputs"]) == {"topic": "durable agents"}
    assert "sha256:" in fields["source"]
    item = envelope(
        kitaru("flow deployments show research_agent --version 1 -o json"), "flow deployments show"
    )
    assert (item["flow"], item["version"], item["name"]) == (
        "research_agent",
        1,
        "research-agent-v1",
    )
    assert item["tags"] == [{"tag": "default", "exclusive": True, "weight": None}]
    assert item["snapshot_name"] == "kitaru::research_agent::v1"
    assert item["inputs"] == {"topic": "durable agents"}
    assert len(item["source_sha256"]) == 64 and fields["source"].endswith(item["source_sha256"])
    canary = envelope(
        kitaru("flow deployments show research_agent --tag canary -o json"),
        "flow deployments show",
    )
    assert canary["version"] == 2 and canary["tags"] == [
        {"tag": "canary", "exclusive": True, "weight": None}
    ]


def test_executions_get_logs_wait_and_deployment_logs(kitaru: Kitaru) -> None:
    exec_id = execution_of(kitaru, "invoke research_agent")

    assert kitaru(f"executions wait {exec_id} --timeout 240").out == "notes on durable agents\n"
    waited = envelope(kitaru(f"executions wait {exec_id} --timeout 60 -o json"), "executions wait")
    assert (waited["exec_id"], waited["status"]) == (exec_id, "completed")
    assert waited["result"] == "notes on durable agents"

    text = kitaru(f"executions get {exec_id}").out
    got = fields_of(text)
    assert got["execution"] == exec_id and got["flow"] == "research_agent"
    assert (got["requested"], got["version"], got["status"]) == ("default", "1", "completed")
    assert got["result"] == "notes on durable agents"
    item = envelope(kitaru(f"executions get {exec_id} -o json"), "executions get")
    assert (item["exec_id"], item["status"], item["resolved_version"]) == (exec_id, "completed", 1)
    assert item["resolved_tag"] == "default" and item["deployment"] == "research-agent-v1"
    assert item["job_name"] == exec_id and item["finished_at"]

    assert "researching durable agents" in kitaru(f"executions logs {exec_id}").out
    item = envelope(kitaru(f"executions logs {exec_id} -o json"), "executions logs")
    assert item["exec_id"] == exec_id and "researching durable agents" in item["logs"]

    # `flow deployments logs`: the latest execution of the version the route resolves to.
    assert "researching durable agents" in kitaru("flow deployments logs research_agent").out
    item = envelope(
        kitaru("flow deployments logs research_agent --version 1 -o json"),
        "flow deployments logs",
    )
    assert (item["exec_id"], item["version"]) == (exec_id, 1)
    assert "researching durable agents" in item["logs"]
    none_yet = error_envelope(
        kitaru("flow deployments logs research_agent --tag canary -o json", check=False),
        "flow deployments logs",
    )
    assert none_yet["type"] == "NoExecutions" and "v2 has no executions yet" in none_yet["message"]

    items = envelope(
        kitaru("executions list --flow research_agent -o json"), "executions list", many=True
    )
    assert [i["exec_id"] for i in items] == [exec_id]
    listed = kitaru("executions list").out.splitlines()
    assert listed[0].split() == ["EXECUTION", "FLOW", "VERSION", "STATUS", "CREATED"]
    assert listed[1].split()[:4] == [exec_id, "research_agent", "1", "completed"]


def test_cancel_a_slow_execution(
    kitaru: Kitaru, namespace: str, k8s: kubernetes.client.ApiClient
) -> None:
    exec_id = execution_of(
        kitaru, 'invoke research_agent --tag canary --input \'{"topic": "slow"}\''
    )
    wait_for(
        lambda: (
            envelope(kitaru(f"executions get {exec_id} -o json"), "executions get")["status"]
            == "running"
        ),
        180,
        message=f"{exec_id} running",
    )
    batch = kubernetes.client.BatchV1Api(k8s)
    assert batch.read_namespaced_job(exec_id, namespace).metadata.name == exec_id

    item = envelope(kitaru(f"executions cancel {exec_id} -o json"), "executions cancel")
    assert item["exec_id"] == exec_id and item["resolved_version"] == 2
    # Asking again is harmless, and says what it did.
    assert kitaru(f"executions cancel {exec_id}").out == f"Cancellation requested for {exec_id}\n"

    failed = kitaru(f"executions wait {exec_id} --timeout 120", check=False)
    assert failed.code == 1, failed
    assert failed.err.startswith("Error: ") and "cancel" in failed.err.lower(), failed.err
    error = error_envelope(
        kitaru(f"executions wait {exec_id} --timeout 60 -o json", check=False), "executions wait"
    )
    assert error["type"] == "ExecutionFailed" and "cancel" in error["message"].lower()

    item = envelope(kitaru(f"executions get {exec_id} -o json"), "executions get")
    assert item["status"] == "cancelled" and item["reason"] == "Cancelled"
    assert fields_of(kitaru(f"executions get {exec_id}").out)["status"] == "cancelled"

    def job_gone() -> bool:
        return not [
            j for j in batch.list_namespaced_job(namespace).items if j.metadata.name == exec_id
        ]

    wait_for(job_gone, 60, message="the Job deleted")
    core = kubernetes.client.CoreV1Api(k8s)
    wait_for(
        lambda: (
            not core.list_namespaced_pod(
                namespace, label_selector=f"kitaru.dev/invocation={exec_id}"
            ).items
        ),
        90,
        message="its pod deleted",
    )


def test_executions_list_selects_on_the_server_newest_first(kitaru: Kitaru) -> None:
    first = execution_of(kitaru, "invoke research_agent")
    kitaru(f"executions wait {first} --timeout 240")
    second = execution_of(kitaru, 'invoke research_agent --tag canary --input \'{"topic": "b"}\'')
    kitaru(f"executions wait {second} --timeout 240")
    slow = execution_of(kitaru, 'invoke research_agent --input \'{"topic": "slow"}\'')
    kitaru(f"executions cancel {slow}")
    kitaru(f"executions wait {slow} --timeout 120", check=False)  # exit 1: cancelled

    def listed(options: str) -> list[str]:
        items = envelope(kitaru(f"executions list {options} -o json"), "executions list", many=True)
        return [item["exec_id"] for item in items]

    assert listed("--flow research_agent --status completed") == [second, first]
    assert listed("--status completed --limit 1") == [second]
    assert listed("--status cancelled") == [slow]
    assert listed("--flow research_agent") == [slow, second, first]
    assert listed("--flow other_flow") == []
    bad = error_envelope(
        kitaru("executions list --flow Bad -o json", check=False), "executions list"
    )
    assert bad["type"] == "InvalidName"
    usage = kitaru("executions list --status sleeping", check=False)  # a usage error: exit 1
    assert usage.code == 1 and "Invalid value for '--status'" in usage.err, usage


def test_prune_deletes_old_untagged_versions_and_never_reuses_a_number(kitaru: Kitaru) -> None:
    for _ in range(4):  # v3..v6, untagged
        kitaru("build flows/research.py:research_agent")
    kitaru("flow tag research_agent experiment --version 3")  # shared: still a tag
    pruned = envelope(
        kitaru("flow deployments prune research_agent --keep 2 -o json"),
        "flow deployments prune",
    )
    # Kept: the two newest (v5, v6) and every tagged one (v1 default, v2 canary, v3).
    assert pruned == {
        "flow": "research_agent",
        "deleted": [4],
        "kept_newest": [5, 6],
        "kept_tagged": [1, 2, 3],
    }
    versions = envelope(
        kitaru("flow deployments list research_agent -o json"), "flow deployments list", many=True
    )
    assert [d["version"] for d in versions] == [1, 2, 3, 5, 6]
    kitaru("flow deployments prune research_agent --keep 0")  # v5 and v6 go too
    kitaru("build flows/research.py:research_agent")
    versions = envelope(
        kitaru("flow deployments list research_agent -o json"), "flow deployments list", many=True
    )
    assert [d["version"] for d in versions] == [1, 2, 3, 7]  # 4, 5 and 6 are never reused
