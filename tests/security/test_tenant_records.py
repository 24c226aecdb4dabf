"""Issue 23 items 4 and 5, where the running operator is what is tested (a process, no
pod: a quota allows none). Admission keeps consumers from marking runs and forging
stamps (tests/api/test_invocation_admission.py, test_route_stamp.py); here the operator
itself does not trust what such marks would say, and the history says how it knows who
changed a route:

- a run labelled with a schedule's name but not controlled by that schedule is neither
  pruned by its history limits nor counted as active (Forbid, Replace);
- a run squatting the name of a shadow run is left alone, and said so in an Event;
- `by` is verified for the client's signed writes and inferred for a field manager a
  writer named itself (`kubectl patch --field-manager=alice`), in the SDK, MCP, `-o json`
  and the text of `kitaru flow history`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from cli_support import mcp_session, new_project
from kitaru.client import KitaruClient
from kitaru.client.connection import combine, load_kube_context
from kitaru.core.manifests import build_invocation
from kitaru.core.models import FlowScheduleSpec
from kitaru.core.schedules import build_scheduled_run
from support import KUBECONFIG, create, deployment, get, kubectl, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

FLOW = "research_agent"
IMAGE = "kitaru.local/probe:never-run"
NO_PODS = {
    "apiVersion": "v1",
    "kind": "ResourceQuota",
    "metadata": {"name": "no-pods"},
    "spec": {"hard": {"pods": "0"}},
}


def admin_client(namespace: str) -> KitaruClient:
    env = {"KUBECONFIG": str(KUBECONFIG), "KITARU_PROJECT": namespace}
    return KitaruClient(combine(env, None, load_kube_context(env)))


def finish(name: str, phase: str, namespace: str) -> None:
    """What the operator writes when a run ends (an admin may write status)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    kubectl(
        "patch", "finv", name, "--subresource=status", "--type=merge", "-p",
        json.dumps({"status": {"phase": phase, "completionTime": stamp}}), namespace=namespace,
    )  # fmt: skip


def test_a_schedule_counts_only_the_runs_it_controls(running_operator: Any, namespace: str) -> None:
    create(NO_PODS, namespace)
    create(deployment(FLOW, 1, image=IMAGE), namespace)
    schedule = {
        "apiVersion": "kitaru.dev/v1alpha1",
        "kind": "FlowSchedule",
        "metadata": {"name": "nightly"},
        "spec": {
            "schedule": "@yearly",
            "flow": FLOW,
            "suspend": True,
            "concurrencyPolicy": "Forbid",
            "successfulRunsHistoryLimit": 0,
        },
    }
    body = json.loads(
        kubectl("create", "-f", "-", "-o", "json", namespace=namespace,
                input=json.dumps(schedule)).stdout
    )  # fmt: skip
    spec = FlowScheduleSpec.model_validate(schedule["spec"])

    def run(name: str, owned: bool) -> str:
        if owned:
            made = build_scheduled_run(body, spec, datetime(2026, 1, 1, tzinfo=UTC))
            made["metadata"]["name"] = name
        else:  # what a consumer's label did before admission refused it
            made = build_invocation(FLOW, name=name)
            made["metadata"]["labels"]["kitaru.dev/schedule"] = "nightly"
        create(made, namespace)
        return name

    # The unfinished ones stay so: no pod may run here.
    owned_done, owned_running = run("owned-done", True), run("owned-running", True)
    foreign_done, foreign_running = run("foreign-done", False), run("foreign-running", False)
    for name in (owned_done, foreign_done):
        finish(name, "Completed", namespace)
    # A spec change makes the operator reconcile the schedule with all four in memory.
    kubectl("patch", "fsched", "nightly", "--type=merge", "-p",
            json.dumps({"spec": {"failedRunsHistoryLimit": 2}}), namespace=namespace)  # fmt: skip

    def reconciled() -> dict[str, Any] | None:
        obj = get("fsched", "nightly", namespace) or {}
        status = obj.get("status") or {}
        current = status.get("observedGeneration") == obj["metadata"]["generation"]
        return status if current and get("finv", owned_done, namespace) is None else None

    status = wait_for(reconciled, timeout=60, message="the schedule reconciled and pruned")
    # Its own finished run was pruned (limit 0) and its own running run is active; the
    # runs merely labelled with its name are neither.
    assert status["active"] == [owned_running]
    assert get("finv", foreign_done, namespace) is not None
    assert get("finv", foreign_running, namespace) is not None


def test_a_squatted_shadow_name_is_left_alone(running_operator: Any, namespace: str) -> None:
    create(NO_PODS, namespace)
    client = admin_client(namespace)
    for version in (1, 2):
        create(deployment(FLOW, version, image=IMAGE), namespace)
    client.deployments.tag(FLOW, "stable", 1, exclusive=True)
    client.deployments.shadow(FLOW, "stable", 2, 1.0)
    # Someone takes the name the shadow of `primary` will have, before it is invoked.
    create(build_invocation(FLOW, name="primary-shadow", version=1), namespace)
    create(build_invocation(FLOW, name="primary", tag="stable"), namespace)

    def warned() -> bool:
        proc = kubectl(
            "get", "events", "--field-selector", "involvedObject.name=primary",
            "-o", "jsonpath={.items[*].message}", namespace=namespace,
        )  # fmt: skip
        return "an invocation of that name exists and is not the shadow of primary" in proc.stdout

    wait_for(warned, timeout=60, message="a ShadowNotStarted Event")
    squatter = get("finv", "primary-shadow", namespace)
    assert squatter is not None and "shadowOf" not in squatter["spec"]


def test_history_says_whether_by_was_verified_or_inferred(
    running_operator: Any, namespace: str, tmp_path: Path
) -> None:
    kitaru = new_project(tmp_path, namespace)
    for version in (1, 2):
        create(deployment(FLOW, version, image=IMAGE), namespace)
    kitaru(f"flow tag {FLOW} stable --version 1 --exclusive --reason first")
    # A writer names its own field manager: the history may only infer from it.
    kubectl(
        "patch", "froute", "research-agent.stable", "--type=merge", "--field-manager=alice",
        "-p", json.dumps({"spec": {"versions": [2]}}), namespace=namespace,
    )  # fmt: skip
    client = admin_client(namespace)
    changes = wait_for(
        lambda: (c := client.deployments.history(FLOW, "stable")["changes"]) and len(c) == 2 and c,
        timeout=30,
        message="both changes recorded",
    )
    me = client.kube.username()
    assert [(c["by"], c["bySource"], c["byVerified"]) for c in changes] == [
        (me, "annotation", True),
        ("alice", "managedFields", False),
    ]
    as_json = kitaru(f"flow history {FLOW} stable -o json").json()["items"]
    assert [c["byVerified"] for c in as_json] == [True, False]
    text = kitaru(f"flow history {FLOW} stable").out
    assert f"{me} (verified)" in text and "alice (inferred)" in text, text

    async def over_mcp() -> list[bool]:
        async with mcp_session(kitaru.project, kitaru.env) as session:
            result = await session.call_tool(
                "kitaru_deployments_history", {"flow": FLOW, "tag": "stable"}
            )
            assert not result.is_error and result.structured_content, result.content
            return [c["byVerified"] for c in result.structured_content["changes"]]

    assert anyio.run(over_mcp) == [True, False]
