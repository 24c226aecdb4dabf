"""The operator against the real API server: routing story, version deletion, restarts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kitaru.core.manifests import build_deployment
from support import OperatorProcess, kubectl, route, runner_image, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")


def apply(namespace: str, *objects: dict[str, Any]) -> None:
    kubectl(
        "apply",
        "-f",
        "-",
        namespace=namespace,
        input=json.dumps({"kind": "List", "apiVersion": "v1", "items": list(objects)}),
    )


def deployment(flow: str, version: int) -> dict[str, Any]:
    return build_deployment(flow, version, entrypoint="m:f", image=runner_image())


def get(namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    proc = kubectl("get", kind, name, "-o", "json", namespace=namespace, check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def tags(namespace: str, name: str) -> str | None:
    obj = get(namespace, "fdep", name)
    return ((obj or {}).get("status") or {}).get("tagSummary")


def tag_set(namespace: str, name: str) -> set[str]:
    return set(filter(None, (tags(namespace, name) or "").split(",")))


def test_routing_story(running_operator: Any, namespace: str) -> None:
    apply(namespace, deployment("research_agent", 1))
    default = wait_for(lambda: get(namespace, "froute", "research-agent.default"), 30)
    assert default["spec"]["versions"] == [1] and default["spec"]["exclusive"] is True
    wait_for(lambda: tag_set(namespace, "research-agent-v1") == {"default"}, 10)

    apply(namespace, deployment("research_agent", 2), route("research_agent", "canary", 2))
    wait_for(lambda: tag_set(namespace, "research-agent-v2") == {"canary"}, 10)
    assert tag_set(namespace, "research-agent-v1") == {"default"}
    wait_for(
        lambda: (
            (get(namespace, "froute", "research-agent.default") or {})["metadata"]
            .get("annotations", {})
            .get("kitaru.dev/highest-version")
            == "2"
        ),
        10,
        message="high-water mark raised to 2",
    )

    apply(namespace, route("research_agent", "stable", 1))
    wait_for(lambda: tag_set(namespace, "research-agent-v1") == {"default", "stable"}, 10)
    started = time.monotonic()
    apply(namespace, route("research_agent", "stable", 2))  # move stable to v2
    wait_for(lambda: tag_set(namespace, "research-agent-v2") == {"canary", "stable"}, 5)
    wait_for(lambda: tag_set(namespace, "research-agent-v1") == {"default"}, 5)
    moved_in = time.monotonic() - started
    assert moved_in < 1.0 + 0.5, f"tags followed the route after {moved_in:.2f}s"  # + kubectl

    apply(namespace, route("research_agent", "benchmark", 1, 2, exclusive=False))
    wait_for(lambda: "benchmark" in tag_set(namespace, "research-agent-v1"), 10)
    wait_for(
        lambda: tag_set(namespace, "research-agent-v2") == {"canary", "stable", "benchmark"}, 10
    )
    table = kubectl("get", "fdep", namespace=namespace).stdout
    v1_line = next(line for line in table.splitlines() if line.startswith("research-agent-v1"))
    v2_line = next(line for line in table.splitlines() if line.startswith("research-agent-v2"))
    assert "default" in v1_line and "benchmark" in v1_line
    assert all(t in v2_line for t in ("canary", "stable", "benchmark"))

    bench = get(namespace, "froute", "research-agent.benchmark")
    assert bench is not None
    ready = {c["type"]: c for c in bench["status"]["conditions"]}["Ready"]
    assert ready["status"] == "True" and bench["status"].get("resolvedVersion") is None
    events = kubectl("get", "events", "-o", "json", namespace=namespace).stdout
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert {"DefaultRouteCreated", "TagsChanged"} <= reasons


def test_deleted_version_leaves_shared_routes(running_operator: Any, namespace: str) -> None:
    apply(namespace, deployment("flow_a", 1), deployment("flow_a", 2), deployment("flow_a", 3))
    wait_for(lambda: get(namespace, "froute", "flow-a.default"), 30)
    apply(
        namespace,
        route("flow_a", "shared", 2, 3, exclusive=False),
        route("flow_a", "solo", 3, exclusive=False),
    )
    wait_for(lambda: tag_set(namespace, "flow-a-v3") == {"shared", "solo"}, 10)
    kubectl("delete", "fdep", "flow-a-v3", namespace=namespace)
    wait_for(
        lambda: (
            (get(namespace, "froute", "flow-a.shared") or {}).get("spec", {}).get("versions") == [2]
        ),
        10,
        message="v3 removed from the shared route",
    )
    wait_for(
        lambda: get(namespace, "froute", "flow-a.solo") is None, 10, message="empty route deleted"
    )
    wait_for(lambda: tag_set(namespace, "flow-a-v2") == {"shared"}, 10)
    # A route to a version that never existed is reported, not pruned.
    apply(namespace, route("flow_a", "typo", 9, exclusive=False))
    wait_for(
        lambda: any(
            c["reason"] == "VersionNotFound"
            for c in ((get(namespace, "froute", "flow-a.typo") or {}).get("status") or {}).get(
                "conditions", []
            )
        ),
        10,
    )
    assert get(namespace, "froute", "flow-a.typo")["spec"]["versions"] == [9]


@pytest.fixture
def operator(namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    op = OperatorProcess(namespace, tmp_path, resync_seconds=1)
    yield op
    op.kill()


def test_restarts_converge_with_each_effect_once(operator: OperatorProcess, namespace: str) -> None:
    operator.start()
    apply(namespace, deployment("flow_a", 1))
    wait_for(lambda: tag_set(namespace, "flow-a-v1") == {"default"}, 30)
    operator.kill()

    # While the operator is down: a new flow, and a new version of the first.
    apply(namespace, deployment("flow_b", 1), deployment("flow_b", 2), deployment("flow_a", 2))
    operator.start()
    wait_for(lambda: tag_set(namespace, "flow-b-v1") == {"default"}, 30)
    wait_for(
        lambda: (
            get(namespace, "froute", "flow-a.default")["metadata"]["annotations"].get(
                "kitaru.dev/highest-version"
            )
            == "2"
        ),
        30,
    )
    wait_for(lambda: (get(namespace, "fdep", "flow-b-v2") or {}).get("status"), 30)
    before = {
        name: get(namespace, kind, name)["metadata"]["resourceVersion"]
        for kind, name in [
            ("fdep", "flow-a-v1"),
            ("fdep", "flow-a-v2"),
            ("fdep", "flow-b-v1"),
            ("fdep", "flow-b-v2"),
            ("froute", "flow-a.default"),
            ("froute", "flow-b.default"),
        ]
        for kind in [kind]
    }
    operator.kill()
    operator.start()  # returns once its model of versions and routes is listed
    # Proving that nothing happens needs an observation window (two resync periods).
    window_end = time.monotonic() + 2.5
    wait_for(lambda: time.monotonic() > window_end, 5)
    for name, version in before.items():
        kind = "froute" if "." in name else "fdep"
        assert get(namespace, kind, name)["metadata"]["resourceVersion"] == version, name
    log = operator.log()
    assert log.count(f"FlowRoute/{namespace}/flow-a.default DefaultRouteCreated") == 1
    assert log.count(f"FlowRoute/{namespace}/flow-b.default DefaultRouteCreated") == 1
    assert get(namespace, "froute", "flow-b.default")["spec"]["versions"] == [1]


def test_a_route_applied_by_gitops_is_reported_not_rewritten(
    running_operator: Any, namespace: str
) -> None:
    """Taking a deleted version out of a route that a GitOps controller applies would
    fight the controller on every sync: the route says VersionNotFound instead."""
    apply(namespace, deployment("flow_g", 1), deployment("flow_g", 2))
    wait_for(lambda: get(namespace, "froute", "flow-g.default"), 30)
    kubectl(
        "apply",
        "--server-side",
        "--field-manager=kustomize-controller",
        "-f",
        "-",
        namespace=namespace,
        input=json.dumps(route("flow_g", "reviewed", 1, 2, exclusive=False)),
    )
    wait_for(lambda: tag_set(namespace, "flow-g-v2") == {"reviewed"}, 10)
    kubectl("delete", "fdep", "flow-g-v2", namespace=namespace)

    def reported() -> dict[str, Any] | None:
        found = get(namespace, "froute", "flow-g.reviewed") or {}
        ready = [
            c for c in (found.get("status") or {}).get("conditions", []) if c["type"] == "Ready"
        ]
        return found if ready and ready[0]["reason"] == "VersionNotFound" else None

    found = wait_for(reported, 15, message="the applied route reports the missing version")
    assert found["spec"]["versions"] == [1, 2]  # as git says, until git says otherwise
