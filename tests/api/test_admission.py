"""Cross-object rules at admission, exercised with plain kubectl on the real API server."""

from __future__ import annotations

import json
import re
import uuid

import kubernetes
import pytest
from support import create, deployment, kubectl, route, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

FLOW = "research_agent"


def delete(kind: str, name: str, namespace: str):
    return kubectl("delete", kind, name, "--wait=false", namespace=namespace, check=False)


def patch(kind: str, name: str, body: dict, namespace: str) -> None:
    kubectl("patch", kind, name, "--type=merge", "-p", json.dumps(body), namespace=namespace)


def deleted_after_retries(kind: str, name: str, namespace: str) -> bool:
    """Admission params come from an informer, so a rule may lag a route change briefly."""
    return delete(kind, name, namespace).returncode == 0


def test_version_holding_an_exclusive_tag_cannot_be_deleted(namespace: str) -> None:
    for version in (1, 2, 3):
        create(deployment(FLOW, version), namespace)
    create(deployment("other_flow", 2), namespace)
    create(route(FLOW, "default", 1), namespace)
    create(route(FLOW, "stable", 2), namespace)
    create(route(FLOW, "bench", 1, 2, 3, exclusive=False), namespace)
    create(route("other_flow", "default", 2), namespace)
    create(route("other_flow", "prod", 3), namespace)  # version 3 of another flow

    proc = delete("fdep", "research-agent-v2", namespace)
    assert proc.returncode != 0
    assert (
        "version 2 of flow research_agent holds the exclusive tag stable; move the tag to "
        "another version first: kitaru flow tag research_agent stable --version N --exclusive"
    ) in proc.stderr
    assert (
        kubectl("get", "fdep", "research-agent-v2", namespace=namespace, check=False).returncode
        == 0
    )

    # shared tags and other flows' exclusive tags do not hold a version
    assert delete("fdep", "research-agent-v3", namespace).returncode == 0

    patch("froute", "research-agent.stable", {"spec": {"versions": [1]}}, namespace)
    wait_for(
        lambda: deleted_after_retries("fdep", "research-agent-v2", namespace),
        timeout=30,
        message="version 2 deletable after stable moved",
    )

    proc = delete("fdep", "research-agent-v1", namespace)
    assert proc.returncode != 0
    assert "version 1 of flow research_agent holds the exclusive tag" in proc.stderr


def test_default_route_can_only_be_moved(namespace: str) -> None:
    create(deployment(FLOW, 1), namespace)
    create(deployment(FLOW, 2), namespace)
    create(route(FLOW, "default", 1), namespace)
    create(route(FLOW, "canary", 2), namespace)

    proc = delete("froute", "research-agent.default", namespace)
    assert proc.returncode != 0
    assert (
        "the default route of flow research_agent cannot be deleted, only moved: "
        "kitaru flow tag research_agent default --version N --exclusive"
    ) in proc.stderr

    # the default version is protected until default moves
    assert delete("fdep", "research-agent-v1", namespace).returncode != 0
    patch("froute", "research-agent.default", {"spec": {"versions": [2]}}, namespace)
    wait_for(
        lambda: deleted_after_retries("fdep", "research-agent-v1", namespace),
        timeout=30,
        message="version 1 deletable after default moved",
    )

    # other routes go freely; default goes only when the whole flow is deleted on purpose
    assert delete("froute", "research-agent.canary", namespace).returncode == 0
    annotate = {"metadata": {"annotations": {"kitaru.dev/deleting-flow": "false"}}}
    patch("froute", "research-agent.default", annotate, namespace)
    assert delete("froute", "research-agent.default", namespace).returncode != 0
    kubectl(
        "annotate",
        "froute",
        "research-agent.default",
        "kitaru.dev/deleting-flow=true",
        "--overwrite",
        namespace=namespace,
    )
    assert delete("froute", "research-agent.default", namespace).returncode == 0


def test_version_numbers_are_never_reused(namespace: str) -> None:
    create(deployment(FLOW, 1), namespace)
    create(deployment("other_flow", 1), namespace)
    create(route(FLOW, "default", 1, annotations={"kitaru.dev/highest-version": "3"}), namespace)
    create(route("other_flow", "default", 1), namespace)

    for version in (2, 3):
        proc = create(deployment(FLOW, version), namespace, check=False)
        assert proc.returncode != 0
        assert (
            f"version {version} of flow research_agent was used before (highest so far: 3) "
            "and version numbers are never reused; create version 4 instead"
        ) in proc.stderr
        assert (
            kubectl(
                "get", "fdep", f"research-agent-v{version}", namespace=namespace, check=False
            ).returncode
            != 0
        )

    create(deployment(FLOW, 4), namespace)
    create(deployment("other_flow", 2), namespace)  # another flow has its own sequence


def test_namespace_deletion_always_completes(k8s: kubernetes.client.ApiClient) -> None:
    name = f"t-ns-delete-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    for version in (1, 2):
        create(deployment(FLOW, version), name)
    create(route(FLOW, "default", 1, annotations={"kitaru.dev/highest-version": "2"}), name)
    create(route(FLOW, "stable", 2), name)
    create(route(FLOW, "bench", 1, 2, exclusive=False), name)
    assert delete("fdep", "research-agent-v1", name).returncode != 0  # rules are in force

    kubectl("delete", "namespace", name, "--wait=false")
    core = kubernetes.client.CoreV1Api(k8s)

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except kubernetes.client.ApiException as err:
            return err.status == 404
        return False

    wait_for(gone, timeout=90, message=f"namespace {name} deleted")


def test_refusal_names_every_exclusive_tag_the_version_holds(namespace: str) -> None:
    """Each route is checked on its own; the message lists the version's other exclusive
    tags from its status (written by the operator, here by hand)."""
    create(deployment(FLOW, 1), namespace)
    create(route(FLOW, "stable", 1), namespace)
    create(route(FLOW, "canary", 1), namespace)
    tags = [{"tag": "canary", "exclusive": True}, {"tag": "stable", "exclusive": True}]
    kubectl(
        "patch", "fdep", "research-agent-v1", "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"tags": [*tags, {"tag": "bench", "exclusive": False}]}}),
        namespace=namespace,
    )  # fmt: skip
    proc = delete("fdep", "research-agent-v1", namespace)
    assert proc.returncode != 0
    named = r"holds the exclusive tag (stable \(and canary\)|canary \(and stable\))"
    assert re.search(named, proc.stderr), proc.stderr
    assert "bench" not in proc.stderr


def test_a_versions_source_configmap_outlives_it(namespace: str) -> None:
    kubectl("create", "configmap", "agent-src", "--from-literal=m.py=x = 1", namespace=namespace)
    kubectl("create", "configmap", "unused", "--from-literal=a=b", namespace=namespace)
    version = deployment(FLOW, 1)
    version["spec"]["snapshot"]["source"] = {"configMap": "agent-src", "sha256": "0" * 64}
    create(version, namespace)
    create(deployment(FLOW, 2), namespace)  # a version without source files

    def refused() -> bool:
        proc = kubectl(
            "delete", "configmap", "agent-src", "--dry-run=server", namespace=namespace, check=False
        )
        return (
            proc.returncode != 0
            and (
                "ConfigMap agent-src holds the source of version 1 of flow research_agent; delete "
                "that version first: kitaru flow deployments delete research_agent --version 1"
            )
            in proc.stderr
        )

    wait_for(refused, timeout=30, message="the source ConfigMap protected")
    assert delete("configmap", "unused", namespace).returncode == 0  # others are not
    assert delete("fdep", "research-agent-v1", namespace).returncode == 0
    wait_for(
        lambda: deleted_after_retries("configmap", "agent-src", namespace),
        timeout=30,
        message="the ConfigMap deletable once its version is gone",
    )


def test_lowering_the_annotation_cannot_reuse_a_version(
    namespace: str, roles: str, running_operator: object
) -> None:
    """Issue 23, item 8: the guard trusted an annotation producers can edit. Lower it,
    delete v2, recreate v2 with other code: curl scripts pinned to v2 would run it. The
    mark the guard trusts now lives in the default route's status, which only the
    operator writes."""
    kubectl(
        "create", "rolebinding", "mallory-producer", f"--clusterrole={roles}-producer",
        "--user=mallory", namespace=namespace,
    )  # fmt: skip
    create(deployment(FLOW, 1), namespace)
    create(deployment(FLOW, 2), namespace)
    default = f"{FLOW.replace('_', '-')}.default"
    wait_for(
        lambda: json.loads(kubectl("get", "froute", default, "-o", "json", namespace=namespace,
                                   check=False).stdout or "{}").get("status", {}).get(
            "highestVersion") == 2,
        30,
        message="the operator records the high-water mark",
    )  # fmt: skip
    as_producer = ("--as=mallory",)
    kubectl(
        "annotate", "froute", default, "kitaru.dev/highest-version=0", "--overwrite",
        *as_producer, namespace=namespace,
    )  # fmt: skip
    assert delete("fdep", "research-agent-v2", namespace).returncode == 0
    impostor = deployment(FLOW, 2, image="registry.example/other-code:1")
    proc = kubectl("create", "-f", "-", *as_producer, input=json.dumps(impostor),
                   namespace=namespace, check=False)  # fmt: skip
    assert proc.returncode != 0
    assert "version 2 of flow research_agent was used before (highest so far: 2)" in proc.stderr
    # Nor can the producer lower the operator's record.
    lowered = kubectl(
        "patch", "froute", default, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"highestVersion": 1}}), *as_producer,
        namespace=namespace, check=False,
    )  # fmt: skip
    assert lowered.returncode != 0 and "forbidden" in lowered.stderr.lower()
