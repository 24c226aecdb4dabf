""" "Not yet" is not a failure: an invocation applied together with what it names (a
GitOps sync, a `kubectl apply -f` of one file) waits for it, within its resolve deadline;
a Job of its name that is not its own is never adopted."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kitaru.core.manifests import build_invocation
from support import create, deployment, kubectl, route, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")
FLOWS = 100


def apply_file(namespace: str, *objects: dict[str, Any]) -> None:
    """One `kubectl apply -f` of a file holding all the objects, in this order."""
    items = {"kind": "List", "apiVersion": "v1", "items": list(objects)}
    kubectl("apply", "-f", "-", namespace=namespace, input=json.dumps(items), timeout=300)


def statuses(namespace: str) -> dict[str, dict[str, Any]]:
    listed = json.loads(kubectl("get", "finv", "-o", "json", namespace=namespace).stdout)
    return {i["metadata"]["name"]: i.get("status") or {} for i in listed["items"]}


def condition(status: dict[str, Any], kind: str) -> tuple[str, str] | None:
    found = [c for c in status.get("conditions") or [] if c["type"] == kind]
    return (found[0]["status"], found[0]["reason"]) if found else None


@pytest.fixture
def no_pods(namespace: str) -> None:
    """Jobs are created but no pod runs: resolution and dispatch are what is tested."""
    kubectl("create", "quota", "no-pods", "--hard=pods=0", namespace=namespace)


def test_a_new_flow_and_its_invocation_in_one_file_always_run(
    running_operator: Any, namespace: str, no_pods: None
) -> None:
    objects = []
    for index in range(FLOWS):
        flow = f"gitops_{index}"
        objects += [deployment(flow, 1), build_invocation(flow, name=f"run-{index}")]
    apply_file(namespace, *objects)

    def all_resolved() -> bool:
        found = statuses(namespace)
        return len(found) == FLOWS and all(s.get("resolved") for s in found.values())

    wait_for(all_resolved, timeout=180, interval=1, message=f"{FLOWS} invocations resolved")
    for name, status in statuses(namespace).items():
        assert status["resolved"]["version"] == 1, name
        assert status["jobName"] == name, name


def test_a_route_applied_with_its_invocation_is_waited_for_a_typo_is_not(
    running_operator: Any, namespace: str, no_pods: None
) -> None:
    # Route and invocation in one file: the operator's view of the route may lag the
    # invocation's event; the API server has it, so the invocation waits, never fails.
    objects = []
    for index in range(20):
        flow = f"tagged_{index}"
        objects += [
            deployment(flow, 1),
            deployment(flow, 2),
            route(flow, "canary", 2),
            build_invocation(flow, name=f"canary-{index}", tag="canary"),
        ]
    apply_file(namespace, *objects)

    def all_resolved() -> bool:
        found = statuses(namespace)
        return len(found) == 20 and all(s.get("resolved") for s in found.values())

    wait_for(all_resolved, timeout=120, interval=1, message="20 invocations resolved")
    assert {s["resolved"]["version"] for s in statuses(namespace).values()} == {2}

    # A tag the API server does not have at all is a typo: it fails at once.
    create(build_invocation("tagged_0", name="typo", tag="canary-typo"), namespace)
    failed = wait_for(
        lambda: (s := statuses(namespace)["typo"]).get("phase") == "Failed" and s,
        timeout=30,
        message="the typo to fail",
    )
    assert failed["reason"] == "TagNotFound" and "canary-typo" in failed["message"]


def test_waiting_ends_in_the_same_clear_failure_at_the_deadline(
    running_operator: Any, namespace: str, no_pods: None
) -> None:
    create(deployment("lonely", 1), namespace)
    wait_for(
        lambda: (
            kubectl("get", "froute", "lonely.default", namespace=namespace, check=False).returncode
            == 0
        ),
        timeout=30,
        message="default route",
    )
    # The flow is being deleted on purpose: its default route is gone for good.
    kubectl(
        "annotate", "froute", "lonely.default", "kitaru.dev/deleting-flow=true", namespace=namespace
    )
    kubectl("delete", "froute", "lonely.default", namespace=namespace)
    create(build_invocation("lonely", name="orphan", resolve_deadline_seconds=3), namespace)
    failed = wait_for(
        lambda: (s := statuses(namespace)["orphan"]).get("phase") == "Failed" and s,
        timeout=30,
        message="the invocation to fail after its deadline",
    )
    assert failed["reason"] == "NoDefaultRoute"
    assert "none is routed as 'default'" in failed["message"]


def test_a_job_of_the_same_name_that_is_not_ours_is_never_adopted(
    running_operator: Any, namespace: str, no_pods: None
) -> None:
    create(deployment("agent", 1), namespace)
    kubectl("create", "job", "taken", "--image=busybox", namespace=namespace)
    foreign_uid = json.loads(
        kubectl("get", "job", "taken", "-o", "json", namespace=namespace).stdout
    )["metadata"]["uid"]
    create(build_invocation("agent", name="taken", version=1), namespace)
    failed = wait_for(
        lambda: (s := statuses(namespace)["taken"]).get("phase") == "Failed" and s,
        timeout=30,
        message="the invocation to fail",
    )
    assert failed["reason"] == "JobNameTaken"
    assert "kubectl delete job taken" in failed["message"]
    job = json.loads(kubectl("get", "job", "taken", "-o", "json", namespace=namespace).stdout)
    assert job["metadata"]["uid"] == foreign_uid and not job["metadata"].get("ownerReferences")
