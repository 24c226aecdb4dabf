"""The operator against the real API server: routing story, version deletion, restarts."""

from __future__ import annotations

import json
import re
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


def tag_changes(operator: OperatorProcess, namespace: str, name: str) -> list[set[str]]:
    """The tags of each TagsChanged the operator reported for one version, in order."""
    line = rf"FlowDeployment/{re.escape(namespace)}/{re.escape(name)} TagsChanged: tags: (\S+)"
    return [set(tags.split(",")) - {"(none)"} for tags in re.findall(line, operator.log())]


def ready_reason(namespace: str, kind: str, name: str) -> str | None:
    """The reason of the object's Ready condition, if it has one."""
    status = (get(namespace, kind, name) or {}).get("status") or {}
    ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
    return ready[0]["reason"] if ready else None


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
            ((get(namespace, "froute", "research-agent.default") or {}).get("status") or {}).get(
                "highestVersion"
            )
            == 2
        ),
        10,
        message="high-water mark 2 recorded in the default route's status",
    )

    apply(namespace, route("research_agent", "stable", 1))
    wait_for(lambda: tag_set(namespace, "research-agent-v1") == {"default", "stable"}, 10)
    apply(namespace, route("research_agent", "stable", 2))  # move stable to v2
    wait_for(lambda: tag_set(namespace, "research-agent-v2") == {"canary", "stable"}, 10)
    wait_for(lambda: tag_set(namespace, "research-agent-v1") == {"default"}, 10)
    # The route's change alone moved the tags (nothing visits versions on a timer), and
    # each version saw the move as one change: no step in between, one report each.
    wait_for(
        lambda: (
            tag_changes(running_operator, namespace, "research-agent-v2")
            == [{"canary"}, {"canary", "stable"}]
        ),
        10,
        message="v2 reported canary, then canary and stable",
    )
    assert tag_changes(running_operator, namespace, "research-agent-v1") == [
        {"default"},
        {"default", "stable"},
        {"default"},
    ]

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
    wait_for(lambda: ready_reason(namespace, "froute", "flow-a.typo") == "VersionNotFound", 10)
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
            (get(namespace, "froute", "flow-a.default").get("status") or {}).get("highestVersion")
            == 2
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
    # Listing queued a pass over each flow. A route to a missing version, applied now,
    # is reported by a pass that starts after those: once both flows report theirs, the
    # restarted operator has done all it would do (nothing visits versions on a timer).
    apply(namespace, *(route(flow, "probe", 9, exclusive=False) for flow in ("flow_a", "flow_b")))
    for flow in ("flow-a", "flow-b"):
        wait_for(
            lambda f=flow: ready_reason(namespace, "froute", f"{f}.probe") == "VersionNotFound",
            30,
            message=f"{flow}.probe reported by the restarted operator",
        )
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
