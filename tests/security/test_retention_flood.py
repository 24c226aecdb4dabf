"""Issue 23, item 7: one consumer's flood of failing runs must not delete everyone
else's records. The history limit counts per creator (`kitaru.dev/created-by`, which
each user sets for themselves — admission refuses any other name).

No pod runs: the runs fail their input check at once, the way a flood would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kitaru.core.manifests import build_invocation, build_route
from kitaru.core.routing import RouteView
from support import OperatorProcess, create, deployment, kubectl, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

LIMIT = 3
FLOOD = 25


def invoke_as(user: str, namespace: str, index: int) -> str:
    """A run `user` starts that fails at once (its input is not a string)."""
    body = build_invocation("plain", inputs={"topic": index}, name=f"{user}-{index}")
    body["metadata"]["annotations"] = {"kitaru.dev/created-by": user}
    kubectl("create", "-f", "-", f"--as={user}", input=json.dumps(body), namespace=namespace)
    return str(body["metadata"]["name"])


def runs(namespace: str) -> dict[str, str]:
    listed = json.loads(kubectl("get", "finv", "-o", "json", namespace=namespace).stdout)
    return {
        i["metadata"]["name"]: (i.get("status") or {}).get("phase", "") for i in listed["items"]
    }


def test_a_flood_of_failing_runs_pushes_out_only_its_own_records(
    namespace: str, roles: str, tmp_path: Path
) -> None:
    for user in ("bob", "mallory"):
        kubectl(
            "create", "rolebinding", f"{user}-consumer", f"--clusterrole={roles}-consumer",
            f"--user={user}", namespace=namespace,
        )  # fmt: skip
    schema = {"type": "object", "properties": {"topic": {"type": "string"}}}
    version = deployment("plain", 1)
    version["spec"]["inputSchema"] = schema
    create(version, namespace)
    create(build_route(RouteView("plain", "default", True, frozenset({1}))), namespace)
    operator = OperatorProcess(namespace, tmp_path, extra_args=("--history-limit", str(LIMIT)))
    operator.start()
    try:
        bobs = [invoke_as("bob", namespace, index) for index in range(2)]
        wait_for(lambda: all(runs(namespace).get(b) == "Failed" for b in bobs), 60)
        for index in range(FLOOD):
            invoke_as("mallory", namespace, index)

        def flood_trimmed() -> bool:
            # Finish times have a resolution of one second: runs that finished in the
            # same second as the limit's last one are kept with it, so "about LIMIT".
            names = runs(namespace)
            mallory = [n for n in names if n.startswith("mallory-")]
            return len(mallory) <= FLOOD // 2 and all(names[n] == "Failed" for n in mallory)

        wait_for(flood_trimmed, 90, message=f"mallory's runs trimmed to about {LIMIT}")
        assert all(b in runs(namespace) for b in bobs)  # bob's records are his own budget
    finally:
        operator.stop()
    assert "Traceback" not in operator.log(), operator.log()
