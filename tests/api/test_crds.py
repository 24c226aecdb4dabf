"""The CRDs on the real API server: schemas, CEL rules, printer columns, explain."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kitaru.core.manifests import build_invocation
from support import create, deployment, kubectl, route, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")


def invocation(**options: Any) -> dict:
    """The FlowInvocation `run-1` of research_agent; `options` are `build_invocation`'s."""
    return build_invocation("research_agent", name="run-1", **options)


def get(kind: str, name: str, namespace: str) -> dict:
    return json.loads(kubectl("get", kind, name, "-o", "json", namespace=namespace).stdout)


def exists(kind: str, name: str, namespace: str) -> bool:
    proc = kubectl("get", kind, name, namespace=namespace, check=False)
    if proc.returncode and "NotFound" not in proc.stderr:
        raise AssertionError(proc.stderr)
    return proc.returncode == 0


def _renamed(obj: dict, name: str) -> dict:
    return {**obj, "metadata": {**obj["metadata"], "name": name}}


def _with_spec(obj: dict, **spec: object) -> dict:
    return {**obj, "spec": {**obj["spec"], **spec}}


# Objects the API server must refuse: the builders' valid output bent by `_renamed` and
# `_with_spec`, and routes from `support.route`, which (unlike the builder) does not validate.
REJECTED = [
    pytest.param(
        _renamed(deployment("research_agent", 1), "research-agent-v2"),
        "metadata.name must be research-agent-v<spec.version>",
        id="deployment-name-wrong-version",
    ),
    pytest.param(
        _renamed(deployment("research_agent", 1), "research-agent-v01"),
        "metadata.name must be research-agent-v<spec.version>",
        id="deployment-name-leading-zero",
    ),
    pytest.param(
        _renamed(deployment("research_agent", 1), "researchagent-v1"),
        "metadata.name must be research-agent-v<spec.version>",
        id="deployment-name-wrong-flow",
    ),
    pytest.param(
        _with_spec(deployment("research_agent", 1), flow="Research"),
        "spec.flow in body should match",
        id="flow-pattern",
    ),
    pytest.param(
        _with_spec(_renamed(deployment("research_agent", 1), "research-agent-v0"), version=0),
        "spec.version in body should be greater than or equal to 1",
        id="version-zero",
    ),
    pytest.param(
        deployment("research_agent", 1, image=None),
        "no runnable snapshot: set spec.snapshot.image",
        id="remote-executable-guard",
    ),
    pytest.param(
        _with_spec(deployment("research_agent", 1), snapshot={"image": "x", "entrypoint": "no"}),
        "spec.snapshot.entrypoint in body should match",
        id="entrypoint-pattern",
    ),
    pytest.param(
        _renamed(route("research_agent", "stable", 1), "research-agent.prod"),
        "metadata.name must be research-agent.stable",
        id="route-name",
    ),
    pytest.param(
        route("research_agent", "Stable_1", 1),
        "spec.tag in body should match",
        id="tag-pattern",
    ),
    pytest.param(
        route("research_agent", "t" * 64, 1),
        "spec.tag: Too long",
        id="tag-too-long",
    ),
    pytest.param(
        route("research_agent", "default", 1, exclusive=False),
        "the 'default' tag is always exclusive",
        id="default-as-shared",
    ),
    pytest.param(
        route("research_agent", "stable", 1, 2),
        "an exclusive tag routes to exactly one version",
        id="exclusive-two-versions",
    ),
    pytest.param(
        route("research_agent", "bench", exclusive=False),
        "spec.versions: Invalid value: 0: spec.versions in body should have at least 1 items",
        id="route-no-versions",
    ),
    pytest.param(
        route("research_agent", "bench", 1, 1, exclusive=False),
        "Duplicate value: 1",
        id="route-duplicate-versions",
    ),
    pytest.param(
        _with_spec(invocation(tag="stable"), version=2),
        "set at most one of tag and version",
        id="invocation-tag-and-version",
    ),
    pytest.param(
        _renamed(invocation(), "r" * 64),
        "an invocation name has at most 63 characters",
        id="invocation-name-too-long",
    ),
]


@pytest.mark.parametrize(("obj", "message"), REJECTED)
def test_rejected_with_message_and_nothing_created(obj: dict, message: str, namespace: str) -> None:
    proc = create(obj, namespace, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not exists(obj["kind"], obj["metadata"]["name"], namespace)


def test_valid_objects_and_printer_columns(namespace: str) -> None:
    create(deployment("research_agent", 1), namespace)
    create(route("research_agent", "default", 1), namespace)
    create(route("research_agent", "bench", 1, 2, exclusive=False), namespace)
    create(invocation(tag="bench", inputs={"topic": "x", "nested": {"a": [1, 2]}}), namespace)

    fdep = kubectl("get", "fdep", namespace=namespace).stdout.splitlines()
    assert fdep[0].split() == ["NAME", "FLOW", "VERSION", "TAGS", "READY", "AGE"]
    assert fdep[1].split()[:3] == ["research-agent-v1", "research_agent", "1"]
    froute = kubectl("get", "froute", namespace=namespace).stdout.splitlines()
    assert froute[0].split() == ["NAME", "FLOW", "TAG", "MODE", "VERSIONS", "SPLIT", "READY"]
    assert froute[1].split() == ["research-agent.bench", "research_agent", "bench", "[1,2]"]
    finv = kubectl("get", "finv", namespace=namespace).stdout.splitlines()
    assert finv[0].split() == ["NAME", "FLOW", "VERSION", "PHASE", "AGE"]

    everything = kubectl("get", "kitaru", "-o", "name", namespace=namespace).stdout.split()
    assert sorted(everything) == [
        "flowdeployment.kitaru.dev/research-agent-v1",
        "flowinvocation.kitaru.dev/run-1",
        "flowroute.kitaru.dev/research-agent.bench",
        "flowroute.kitaru.dev/research-agent.default",
    ]
    spec = get("finv", "run-1", namespace)["spec"]
    assert spec == {
        "flow": "research_agent",
        "tag": "bench",
        "inputs": {"topic": "x", "nested": {"a": [1, 2]}},
        "cancelRequested": False,
    }


def test_status_subresource_and_status_columns(namespace: str) -> None:
    create(deployment("research_agent", 1), namespace)
    create(invocation(), namespace)
    status = {
        "phase": "Completed",
        "result": {"answer": [1, {"deep": "x"}], "ok": True},
        "resolved": {
            "selector": "default",
            "tag": "default",
            "version": 1,
            "deployment": "research-agent-v1",
            "snapshotName": "kitaru::research_agent::v1",
            "image": "kitaru/runner:test",
            "inputsHash": "0" * 64,
        },
    }
    kubectl(
        "patch",
        "finv",
        "run-1",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
        namespace=namespace,
    )
    assert get("finv", "run-1", namespace)["status"] == {"attempts": 0, **status}
    row = kubectl("get", "finv", "run-1", "--no-headers", namespace=namespace).stdout.split()
    assert row[:4] == ["run-1", "research_agent", "1", "Completed"]

    kubectl(
        "patch",
        "fdep",
        "research-agent-v1",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(
            {
                "status": {
                    "tagSummary": "default,stable",
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "Runnable",
                            "lastTransitionTime": "2025-01-01T00:00:00Z",
                        }
                    ],
                }
            }
        ),
        namespace=namespace,
    )
    row = kubectl("get", "fdep", "--no-headers", namespace=namespace).stdout.split()
    assert row[:5] == ["research-agent-v1", "research_agent", "1", "default,stable", "True"]


def test_status_is_not_written_through_the_main_resource(namespace: str) -> None:
    create(deployment("research_agent", 1) | {"status": {"tagSummary": "forged"}}, namespace)
    assert "status" not in get("fdep", "research-agent-v1", namespace)


@pytest.mark.parametrize(
    ("kind", "name", "patch", "message"),
    [
        ("fdep", "research-agent-v1", {"spec": {"snapshot": {"image": "other:2"}}}, "immutable"),
        ("fdep", "research-agent-v1", {"spec": {"inputs": {"topic": "new"}}}, "immutable"),
        ("froute", "research-agent.bench", {"spec": {"flow": "other"}}, "flow is immutable"),
        ("froute", "research-agent.bench", {"spec": {"tag": "bench2"}}, "tag is immutable"),
        ("froute", "research-agent.default", {"spec": {"exclusive": False}}, "always exclusive"),
        ("froute", "research-agent.default", {"spec": {"versions": [1, 2]}}, "exactly one"),
        ("finv", "run-1", {"spec": {"tag": "other"}}, "only cancelRequested may change"),
        ("finv", "run-1", {"spec": {"version": 1}}, "set at most one of tag and version"),
        ("finv", "run-1", {"spec": {"inputs": {"topic": "y"}}}, "only cancelRequested may change"),
    ],
)
def test_immutable_fields(kind: str, name: str, patch: dict, message: str, namespace: str) -> None:
    create(_with_spec(deployment("research_agent", 1), inputs={"topic": "x"}), namespace)
    create(route("research_agent", "default", 1), namespace)
    create(route("research_agent", "bench", 1, exclusive=False), namespace)
    create(invocation(tag="bench"), namespace)
    before = get(kind, name, namespace)["spec"]
    proc = kubectl(
        "patch",
        kind,
        name,
        "--type=merge",
        "-p",
        json.dumps(patch),
        namespace=namespace,
        check=False,
    )
    assert proc.returncode != 0
    assert message in proc.stderr
    assert get(kind, name, namespace)["spec"] == before


def test_shared_route_can_change_versions_and_mode(namespace: str) -> None:
    create(route("research_agent", "bench", 1, exclusive=False), namespace)
    for spec in ({"versions": [1, 2]}, {"versions": [3], "exclusive": True}):
        kubectl(
            "patch",
            "froute",
            "research-agent.bench",
            "--type=merge",
            "-p",
            json.dumps({"spec": spec}),
            namespace=namespace,
        )
    assert get("froute", "research-agent.bench", namespace)["spec"]["versions"] == [3]


def test_cancel_request_cannot_be_withdrawn(namespace: str) -> None:
    create(invocation(), namespace)
    cancel = {"spec": {"cancelRequested": True}}
    kubectl("patch", "finv", "run-1", "--type=merge", "-p", json.dumps(cancel), namespace=namespace)
    withdraw = {"spec": {"cancelRequested": False}}
    proc = kubectl(
        "patch",
        "finv",
        "run-1",
        "--type=merge",
        "-p",
        json.dumps(withdraw),
        namespace=namespace,
        check=False,
    )
    assert proc.returncode != 0
    assert "a cancel request cannot be withdrawn" in proc.stderr
    assert get("finv", "run-1", namespace)["spec"]["cancelRequested"] is True


def test_kubectl_explain_shows_descriptions() -> None:
    out = wait_for(
        lambda: kubectl("explain", "flowdeployment.spec.snapshot", check=False).stdout,
        timeout=60,
        message="kubectl explain flowdeployment.spec.snapshot",
    )
    assert "The saved snapshot this version runs." in out
    assert "Container image that runs the flow, preferably pinned by digest." in out
    assert "entrypoint" in out
    top = kubectl("explain", "flowroute").stdout
    assert "FlowRoute is one tag of a flow" in top


def test_short_names_and_category() -> None:
    out = kubectl("api-resources", "--api-group=kitaru.dev", "-o", "wide").stdout
    for line, short in (
        ("flowdeployments", "fdep"),
        ("flowroutes", "froute"),
        ("flowinvocations", "finv"),
    ):
        (row,) = [r for r in out.splitlines() if r.startswith(line)]
        assert short in row.split()
        assert "kitaru" in row.split()[-1]
        assert "true" in row.split()  # namespaced
