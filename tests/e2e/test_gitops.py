"""examples/gitops applied as a GitOps tool would: `kubectl apply -k` into a project
namespace with the operator running; the routes and deployments reach the statuses
the tags imply, a tag invokes its version, and re-applying is a no-op.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chart_support import apply, condition, get, in_namespace, wait_finished
from kitaru.core.manifests import build_invocation, build_route
from kitaru.core.routing import RouteView
from support import REPO, kubectl, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("crds_installed")]

EXAMPLE = REPO / "examples" / "gitops"
HELLO = EXAMPLE / "hello"


def ready_route(namespace: str, name: str) -> dict[str, Any] | None:
    route = get("flowroute", name, namespace)
    ready = condition(route, "Ready")
    if not (route and ready and ready.get("status") == "True"):
        return None
    observed = route["status"].get("observedGeneration")
    return route if observed == route["metadata"]["generation"] else None


def tags_of(namespace: str, name: str) -> dict[str, bool]:
    deployment = get("flowdeployment", name, namespace) or {}
    return {t["tag"]: t["exclusive"] for t in (deployment.get("status") or {}).get("tags") or []}


def argocd_health(script: Path, obj: dict[str, Any]) -> dict[str, Any]:
    """Run an Argo CD health script the way Argo does: `obj` is the live object."""
    import lupa  # a dev dependency: the Lua runtime Argo CD health checks run in

    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script.read_text())
    return dict(result.items())


def test_apply_example_routes_and_tags(cluster: Any, namespace: str, running_operator: Any) -> None:
    kubectl("apply", "-k", str(HELLO), "-n", namespace)

    default = wait_for(
        lambda: ready_route(namespace, "hello.default"),
        timeout=120,
        interval=0.5,
        message="hello.default ready",
    )
    stable = wait_for(
        lambda: ready_route(namespace, "hello.stable"),
        timeout=120,
        interval=0.5,
        message="hello.stable ready",
    )
    shared = wait_for(
        lambda: ready_route(namespace, "hello.reviewed"),
        timeout=120,
        interval=0.5,
        message="hello.reviewed ready",
    )
    assert default["status"]["resolvedVersion"] == 1
    assert default["status"]["mode"] == "exclusive"
    assert stable["status"]["resolvedVersion"] == 2
    assert stable["status"]["mode"] == "exclusive"
    assert shared["status"]["mode"] == "shared"
    assert shared["status"].get("resolvedVersion") is None  # two versions: no single one

    expected = {
        "hello-v1": {"default": True, "reviewed": False},
        "hello-v2": {"stable": True, "reviewed": False},
    }
    for name, tags in expected.items():
        wait_for(
            lambda n=name, t=tags: tags_of(namespace, n) == t,
            timeout=120,
            interval=0.5,
            message=f"{name} to carry {tags}",
        )

    # The tag runs its version's source from the generated, immutable ConfigMap.
    stable = build_invocation(
        "hello", name="hello-stable-1", tag="stable", inputs={"name": "gitops"}
    )
    apply(in_namespace(stable, namespace))
    done = wait_finished(namespace, "hello-stable-1")
    assert done["status"]["phase"] == "Completed", done["status"]
    assert done["status"]["result"] == "Hello, gitops."
    assert done["status"]["resolved"]["version"] == 2

    # A GitOps tool re-applies the same manifests forever: nothing changes.
    again = kubectl("apply", "-k", str(HELLO), "-n", namespace).stdout
    assert "configured" not in again and "created" not in again, again


def test_route_to_missing_version_is_degraded_in_argocd(
    cluster: Any, namespace: str, running_operator: Any
) -> None:
    kubectl("apply", "-k", str(HELLO), "-n", namespace)
    wait_for(
        lambda: ready_route(namespace, "hello.default"),
        timeout=120,
        interval=0.5,
        message="hello.default ready",
    )
    apply(in_namespace(build_route(RouteView("hello", "next", True, frozenset({3}))), namespace))

    def not_found() -> dict[str, Any] | None:
        route = get("flowroute", "hello.next", namespace)
        ready = condition(route, "Ready")
        return route if ready and ready.get("reason") == "VersionNotFound" else None

    route = wait_for(
        not_found, timeout=120, interval=0.5, message="hello.next to report VersionNotFound"
    )
    health = argocd_health(EXAMPLE / "argocd" / "health" / "flowroute.lua", route)
    assert health["status"] == "Degraded"
    assert health["message"] == (condition(route, "Ready") or {}).get("message")
    healthy = argocd_health(
        EXAMPLE / "argocd" / "health" / "flowroute.lua",
        ready_route(namespace, "hello.stable") or {},
    )
    assert healthy["status"] == "Healthy"
