"""Shadow runs at dispatch, against the real API server and the operator (a process):
which invocations are mirrored, what the shadow run is made of, and that a tag moved
onto its candidate drops the shadow. No pod runs here (a quota allows none): the runs'
results and their comparison are in tests/e2e/test_shadow_runs.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kitaru.client import KitaruClient
from kitaru.client.connection import combine, load_kube_context
from kitaru.core.shadow import mirrors
from support import KUBECONFIG, create, deployment, get, kubectl, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

FLOW = "research_agent"


def client_for(namespace: str) -> KitaruClient:
    env = {"KUBECONFIG": str(KUBECONFIG), "KITARU_PROJECT": namespace}
    return KitaruClient(combine(env, None, load_kube_context(env)))


def invocations(namespace: str) -> dict[str, dict[str, Any]]:
    out = kubectl("get", "finv", "-o", "json", namespace=namespace).stdout
    return {i["metadata"]["name"]: i for i in json.loads(out)["items"]}


def test_a_route_mirrors_its_fraction_to_the_candidate(
    running_operator: Any, namespace: str
) -> None:
    create(
        {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"},
         "spec": {"hard": {"pods": "0"}}},
        namespace,
    )  # fmt: skip
    client = client_for(namespace)
    for version in (1, 2):
        create(deployment(FLOW, version), namespace)
    client.deployments.tag(FLOW, "stable", 1, exclusive=True)
    route = client.deployments.shadow(FLOW, "stable", 2, 0.25)
    assert route.shadow == {"version": 2, "fraction": 0.25}

    primaries = [
        client.deployments.invoke(FLOW, tag="stable", inputs={"topic": f"t{i}"}).exec_id
        for i in range(40)
    ]
    pinned = client.deployments.invoke(FLOW, version=1, inputs={"topic": "pinned"}).exec_id
    expected = {name for name in primaries if mirrors(FLOW, name, 0.25)}
    assert 0 < len(expected) < 40

    def dispatched() -> dict[str, dict[str, Any]] | None:
        found = invocations(namespace)
        done = all((found[n].get("status") or {}).get("resolved") for n in [*primaries, pinned])
        shadows = {n for n in found if n.endswith("-shadow")}
        return found if done and len(shadows) == len(expected) else None

    found = wait_for(dispatched, timeout=90, interval=0.5, message="primaries and shadows")
    for name in primaries:
        chain = found[name]["status"]["resolved"]
        if name not in expected:
            assert "shadow" not in chain
            continue
        assert chain["shadow"] == {"name": f"{name}-shadow", "version": 2}
        shadow = found[f"{name}-shadow"]
        assert shadow["spec"]["shadowOf"] == name and shadow["spec"]["version"] == 2
        assert shadow["spec"]["inputs"] == found[name]["spec"]["inputs"]
        assert shadow["metadata"]["labels"]["kitaru.dev/shadow-of"] == name
        (owner,) = shadow["metadata"]["ownerReferences"]
        assert owner["uid"] == found[name]["metadata"]["uid"]
        assert "shadow" not in (shadow.get("status") or {}).get("resolved", {"x": 1})
    assert "shadow" not in found[pinned]["status"]["resolved"]

    # Moving the tag onto the candidate promotes it: the shadow goes.
    client.deployments.tag(FLOW, "stable", 2, exclusive=True)
    assert "shadow" not in (get("froute", "research-agent.stable", namespace) or {})["spec"]
    # Deleting a primary takes its shadow run with it (owner reference).
    victim = sorted(expected)[0]
    kubectl("delete", "finv", victim, namespace=namespace)
    wait_for(
        lambda: get("finv", f"{victim}-shadow", namespace) is None,
        timeout=60,
        message="the shadow run went with its primary",
    )
