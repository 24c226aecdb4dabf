"""The printed curl, run with bash and real curl against the local cluster, in a fresh
project exactly as the product page tells it: `kitaru auth token` inside it mints a token
for the project's client ServiceAccount (created on first use), and the invocation
completes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from cli_support import kitaru_argv, new_project
from support import kubectl

# The kinds must exist however this module is run (alone on a fresh cluster too).
pytestmark = pytest.mark.usefixtures("crds_installed")


def test_generated_curl_starts_the_pinned_version(
    running_operator: object, namespace: str, tmp_path: Path
) -> None:
    kitaru = new_project(tmp_path, namespace)
    kitaru('deploy flows/research.py:research_agent --input \'{"topic": "durable agents"}\'')
    kitaru("deploy flows/research.py:research_agent --tag stable --exclusive")

    script = kitaru(
        "flow deployments curl research_agent --tag stable --input '{\"topic\": \"it'\\''s curl\"}'"
    ).out
    assert "# This command is pinned to v2; regenerate it if the tag moves." in script
    server = json.loads(kubectl("config", "view", "--minify", "-o", "json").stdout)["clusters"][0][
        "cluster"
    ]["server"]
    assert (
        f'KITARU_SERVER_ACCESS_TOKEN="$(KITARU_PROJECT={namespace} kitaru auth token '
        f'--server {server})" || exit 1'
    ) in script

    # Run it as a script would: `kitaru` on PATH, the same active connection.
    env = {**kitaru.env, "PATH": f"{Path(kitaru_argv()[0]).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=kitaru.project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    created = json.loads(done.stdout)
    spec = created["spec"]
    assert (spec["flow"], spec["version"], spec["inputs"]) == (
        "research_agent",
        2,
        {"topic": "it's curl"},
    )
    assert "tag" not in spec
    exec_id = created["metadata"]["name"]

    # Run where another server's connection is active, it mints nothing and calls nothing:
    # the token is never sent to a server it was not minted for.
    elsewhere = {**env, "KITARU_SERVER_URL": "https://127.0.0.2:6443", "KITARU_AUTH_TOKEN": "x"}
    refused = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=kitaru.project,
        env=elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and refused.stdout == "", refused.stdout
    assert f"not {server}, the server it was asked for" in refused.stderr, refused.stderr

    # The tag moves afterwards; the printed command stays pinned to v2.
    kitaru("flow tag research_agent stable --version 1 --exclusive")
    result = kitaru(f"executions wait {exec_id} --timeout 120 -o json").json()["item"]
    assert (result["status"], result["resolved_version"], result["result"]) == (
        "completed",
        2,
        "notes on it's curl",
    )


def test_the_client_identity_can_only_invoke_and_read(namespace: str, tmp_path: Path) -> None:
    kitaru = new_project(tmp_path, namespace)
    token = kitaru("auth token").out.strip()
    account = f"system:serviceaccount:{namespace}:kitaru-client"
    for verb, resource, allowed in [
        ("create", "flowinvocations", "yes"),
        ("get", "flowinvocations", "yes"),
        ("list", "flowdeployments", "yes"),
        ("create", "flowdeployments", "no"),
        ("update", "flowroutes", "no"),
        ("delete", "flowinvocations", "no"),
        ("get", "secrets", "no"),
    ]:
        can = kubectl(
            "auth", "can-i", verb, resource, f"--as={account}", namespace=namespace, check=False
        )
        assert can.stdout.strip() == allowed, (verb, resource, can.stdout)
    assert token and token not in kitaru("auth token -o json").err


def test_auth_token_without_rights_to_create_the_client_names_what_to_ask(
    namespace: str, tmp_path: Path
) -> None:
    # A consumer-like user that may mint tokens but not create ServiceAccounts or roles.
    kubectl("create", "serviceaccount", "limited", namespace=namespace)
    kubectl(
        "create",
        "role",
        "limited",
        "--verb=create",
        "--resource=serviceaccounts/token,flowinvocations.kitaru.dev",
        namespace=namespace,
    )
    kubectl(
        "create",
        "rolebinding",
        "limited",
        "--role=limited",
        f"--serviceaccount={namespace}:limited",
        namespace=namespace,
    )
    token = kubectl("create", "token", "limited", namespace=namespace).stdout.strip()
    kitaru = new_project(tmp_path, namespace)
    server = json.loads(kubectl("config", "view", "--minify", "-o", "json").stdout)["clusters"][0][
        "cluster"
    ]["server"]
    kitaru.env.update(
        KITARU_SERVER_URL=server,
        KITARU_AUTH_TOKEN=token,
        KITARU_SERVICE_ACCOUNT="kitaru-client",
        KITARU_CA_FILE=str(Path(kitaru.env["KUBECONFIG"]).parent / "pki" / "ca.crt"),
    )
    failed = kitaru("auth token -o json", check=False)
    assert failed.code == 1
    error = json.loads(failed.err)["error"]
    assert error["type"] == "ServiceAccountNotFound"
    assert "ask a project admin" in error["message"]
    assert f"kubectl -n {namespace} create serviceaccount kitaru-client" in error["message"]
    assert "--clusterrole=kitaru-client " in error["message"]  # never the consumer role
    assert token not in failed.err + failed.out
