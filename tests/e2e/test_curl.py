"""The printed curl, run with bash and real curl against the local cluster: `kitaru auth
token` inside it mints a ServiceAccount token, and the invocation completes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from cli_support import kitaru_argv, new_project
from support import kubectl

RBAC = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: kitaru-client}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: kitaru-invoker}
rules:
  - apiGroups: [kitaru.dev]
    resources: [flowinvocations]
    verbs: [create, get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: kitaru-invoker}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: kitaru-invoker}
subjects: [{kind: ServiceAccount, name: kitaru-client}]
"""


def test_generated_curl_starts_the_pinned_version(
    running_operator: object, namespace: str, tmp_path: Path
) -> None:
    kubectl("apply", "-f", "-", input=RBAC, namespace=namespace)
    kitaru = new_project(tmp_path, namespace)
    kitaru('deploy flows/research.py:research_agent --input \'{"topic": "durable agents"}\'')
    kitaru("deploy flows/research.py:research_agent --tag stable --exclusive")

    script = kitaru(
        "flow deployments curl research_agent --tag stable --input '{\"topic\": \"it'\\''s curl\"}'"
    ).out
    assert "# This command is pinned to v2; regenerate it if the tag moves." in script
    assert 'KITARU_SERVER_ACCESS_TOKEN="$(kitaru auth token)"' in script

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

    # The tag moves afterwards; the printed command stays pinned to v2.
    kitaru("flow tag research_agent stable --version 1 --exclusive")
    result = kitaru(f"executions wait {exec_id} --timeout 120 -o json").json()["item"]
    assert (result["status"], result["resolved_version"], result["result"]) == (
        "completed",
        2,
        "notes on it's curl",
    )


def test_auth_token_names_the_missing_service_account(namespace: str, tmp_path: Path) -> None:
    kitaru = new_project(tmp_path, namespace)
    failed = kitaru("auth token -o json", check=False)
    assert failed.code == 1
    error = json.loads(failed.err)["error"]
    assert error["type"] == "ServiceAccountNotFound"
    assert "kubectl create serviceaccount kitaru-client" in error["message"]
