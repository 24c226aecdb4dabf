"""examples/gitops offline: the committed source hashes match the source files, the
Argo CD ConfigMap embeds the Lua health scripts unchanged, and the scripts give the
documented health for sample objects (run with lupa, a Lua runtime from PyPI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kitaru.core.jobs import source_sha256

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gitops"
HEALTH = EXAMPLE / "argocd" / "health"


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


def test_argocd_configmap_embeds_the_scripts() -> None:
    (cm,) = _docs(EXAMPLE / "argocd" / "argocd-cm.yaml")
    data = cm["data"]
    assert (
        data["resource.customizations.health.kitaru.dev_FlowInvocation"]
        == (HEALTH / "flowinvocation.lua").read_text()
    )
    assert (
        data["resource.customizations.health.kitaru.dev_FlowRoute"]
        == (HEALTH / "flowroute.lua").read_text()
    )


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
