"""examples/gitops offline: the committed source hashes match the source files, the
Argo CD ConfigMap embeds the Lua health scripts unchanged, and the scripts give the
documented health for sample objects and for statuses made by the operator's own status
code (run with lupa, a Lua runtime from PyPI). tests/gitops runs the example with Flux.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kitaru.core.invocations import Failure, JobSummary, PodSummary, derive_invocation_status
from kitaru.core.jobs import source_sha256
from kitaru.core.models import (
    FlowDeploymentSpec,
    FlowInvocationSpec,
    ResolvedChain,
    SelectorKind,
    Snapshot,
)
from kitaru.core.routing import RouteView
from kitaru.core.status import derive_deployment_status, derive_route_status

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gitops"
HEALTH = EXAMPLE / "argocd" / "health"
NOW = "2025-01-01T00:00:00Z"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_source_sha256_matches_the_committed_files() -> None:
    kustomization = yaml.safe_load((EXAMPLE / "hello" / "kustomization.yaml").read_text())
    sources: dict[str, dict[str, bytes]] = {}
    for generator in kustomization["configMapGenerator"]:
        files = {}
        for entry in generator["files"]:
            key, _, rel = entry.partition("=")
            files[key] = (EXAMPLE / "hello" / rel).read_bytes()
        sources[generator["name"]] = files
    deployments = _docs(EXAMPLE / "hello" / "deployments.yaml")
    assert [d["metadata"]["name"] for d in deployments] == ["hello-v1", "hello-v2"]
    for deployment in deployments:
        source = deployment["spec"]["snapshot"]["source"]
        files = sources[source["configMap"]]
        assert source["files"] == sorted(files)
        assert source["sha256"] == source_sha256(files), deployment["metadata"]["name"]


def test_routes_name_their_flow_and_tag() -> None:
    for route in _docs(EXAMPLE / "hello" / "routes.yaml"):
        spec = route["spec"]
        assert route["metadata"]["name"] == f"{spec['flow']}.{spec['tag']}"
        assert not spec["exclusive"] or len(spec["versions"]) == 1


def test_argocd_configmap_embeds_a_script_for_every_kind() -> None:
    (cm,) = _docs(EXAMPLE / "argocd" / "argocd-cm.yaml")
    assert cm["data"] == {
        f"resource.customizations.health.kitaru.dev_{kind}": (
            HEALTH / f"{kind.lower()}.lua"
        ).read_text()
        for kind in ("FlowDeployment", "FlowInvocation", "FlowRoute")
    }


def test_the_flux_example_syncs_the_project_folder() -> None:
    source, kustomization = _docs(EXAMPLE / "flux" / "team-a.yaml")
    assert kustomization["spec"]["sourceRef"]["name"] == source["metadata"]["name"]
    assert kustomization["spec"]["path"] == "./examples/gitops/team-a"
    assert kustomization["spec"]["prune"] and kustomization["spec"]["wait"]
    project = yaml.safe_load((EXAMPLE / "team-a" / "kustomization.yaml").read_text())
    assert project["resources"] == ["../hello"]


def health(script: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Evaluate an Argo CD health script as Argo does: the object is the global `obj`."""
    import lupa  # a dev dependency: the Lua runtime Argo CD health checks run in

    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute((HEALTH / script).read_text())
    return dict(result.items())


@pytest.mark.parametrize(
    ("status", "expected", "message"),
    [
        (None, "Progressing", "Waiting for the operator"),
        ({"phase": "Pending"}, "Progressing", "Pending"),
        ({"phase": "Running"}, "Progressing", "Running"),
        ({"phase": "Completed", "result": [1, 2]}, "Healthy", "Completed"),
        ({"phase": "Failed", "message": "ValueError: boom"}, "Degraded", "ValueError: boom"),
        ({"phase": "Cancelled"}, "Degraded", "Cancelled"),
    ],
)
def test_flowinvocation_health(status: dict[str, Any] | None, expected: str, message: str) -> None:
    obj: dict[str, Any] = {"metadata": {"name": "run", "generation": 1}, "spec": {"flow": "hello"}}
    if status is not None:
        obj["status"] = status
    assert health("flowinvocation.lua", obj) == {"status": expected, "message": message}


def _route(ready: dict[str, Any] | None, observed: int = 2) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {"name": "hello.stable", "generation": 2},
        "spec": {"flow": "hello", "tag": "stable", "exclusive": True, "versions": [3]},
    }
    if ready is not None:
        obj["status"] = {
            "observedGeneration": observed,
            "conditions": [{"type": "Other", "status": "True"}, {"type": "Ready", **ready}],
        }
    return obj


@pytest.mark.parametrize(
    ("obj", "expected", "message"),
    [
        (_route(None), "Progressing", "Waiting for the operator"),
        (_route({"status": "True", "reason": "Resolved", "message": "v2"}), "Healthy", "v2"),
        (
            _route({"status": "False", "reason": "VersionNotFound", "message": "no version 3"}),
            "Degraded",
            "no version 3",
        ),
        (_route({"status": "False", "reason": "Other", "message": "hm"}), "Progressing", "hm"),
        (
            _route({"status": "True", "reason": "Resolved", "message": "v2"}, observed=1),
            "Progressing",
            "Waiting for the operator to observe generation 2",
        ),
    ],
)
def test_flowroute_health(obj: dict[str, Any], expected: str, message: str) -> None:
    assert health("flowroute.lua", obj) == {"status": expected, "message": message}


# --- the Argo CD scripts on statuses made by the operator's own status code ----------

ROUTE_VIEW = RouteView(flow="hello", tag="stable", exclusive=True, versions=frozenset({2}))
ROUTE = ROUTE_VIEW.to_spec()


def _live(spec: Any, status: Any, generation: int = 1) -> dict[str, Any]:
    """A live object as Argo CD sees it: spec and the status the operator wrote."""
    return {
        "metadata": {"name": "x", "generation": generation},
        "spec": spec.wire(),
        "status": status.wire(),
    }


def _ready_message(obj: dict[str, Any]) -> str:
    return next(c["message"] for c in obj["status"]["conditions"] if c["type"] == "Ready")


def test_flowroute_health_of_derived_statuses() -> None:
    ready = _live(ROUTE, derive_route_status(ROUTE, {1, 2}, None, 1, NOW))
    assert health("flowroute.lua", ready) == {"status": "Healthy", "message": _ready_message(ready)}
    moved = ROUTE.model_copy(update={"versions": [3]})
    missing = _live(moved, derive_route_status(moved, {1, 2}, None, 1, NOW))
    assert health("flowroute.lua", missing) == {
        "status": "Degraded",
        "message": _ready_message(missing),
    }
    # Edited (generation 2) and not yet seen by the operator: Progressing, whatever it was.
    stale = _live(ROUTE, derive_route_status(ROUTE, {1, 2}, None, 1, NOW), generation=2)
    assert health("flowroute.lua", stale)["status"] == "Progressing"


def test_flowdeployment_health_of_derived_statuses() -> None:
    spec = FlowDeploymentSpec(
        flow="hello", version=2, snapshot=Snapshot(image="runner:1", entrypoint="hello:hello")
    )
    runnable = _live(spec, derive_deployment_status(spec, [ROUTE_VIEW], None, 1, NOW))
    assert health("flowdeployment.lua", runnable) == {
        "status": "Healthy",
        "message": _ready_message(runnable),
    }
    no_image = spec.model_copy(update={"snapshot": Snapshot(entrypoint="hello:hello")})
    stuck = _live(no_image, derive_deployment_status(no_image, [], None, 1, NOW))
    assert health("flowdeployment.lua", stuck) == {
        "status": "Degraded",
        "message": _ready_message(stuck),
    }
    assert health("flowdeployment.lua", {"metadata": {"generation": 1}}) == {
        "status": "Progressing",
        "message": "Waiting for the operator",
    }


CHAIN = ResolvedChain(
    selector=SelectorKind.TAG,
    tag="stable",
    version=2,
    deployment="hello-v2",
    snapshot_name="kitaru::hello::v2",
    image="runner:1",
    inputs_hash="h",
)


@pytest.mark.parametrize(
    ("outcome", "job", "pods", "expected"),
    [
        (None, None, [], "Progressing"),
        (CHAIN, JobSummary("j", active=1), [PodSummary("p", NOW, "Running")], "Progressing"),
        (
            CHAIN,
            JobSummary("j", succeeded=1, complete=True),
            [PodSummary("p", NOW, "Succeeded", termination_message='{"ok": true, "result": 1}')],
            "Healthy",
        ),
        (Failure("UnknownTag", "flow 'hello' has no tag 'nope'"), None, [], "Degraded"),
    ],
)
def test_flowinvocation_health_of_derived_statuses(
    outcome: Any, job: JobSummary | None, pods: list[PodSummary], expected: str
) -> None:
    spec = FlowInvocationSpec(flow="hello", tag="stable")
    status = derive_invocation_status(spec, None, outcome, job, pods, NOW, 1)
    verdict = health("flowinvocation.lua", _live(spec, status))
    assert verdict["status"] == expected
    if expected == "Degraded":
        assert verdict["message"] == status.message
