"""Issue 23 item 5 (a): the route history's stamp cannot be forged, with a real producer
token (mallory) against the admission policy kitaru-route-changed-by. The history counts
`changed-by` and `reason` while `change-generation` claims the route's current
generation; the exploit set that claim one ahead in a metadata-only write, then let a
spec write carry it, so the history named "alice" with her reason."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chart_support import bind, kitaru_as, token_client, token_of
from kitaru.core.manifests import build_deployment, build_route
from kitaru.core.routing import RouteView
from kubernetes import client
from kubernetes.client.rest import ApiException
from support import kubectl

pytestmark = pytest.mark.usefixtures("crds_installed")

FLOW = "probe_flow"
ROUTE = "probe-flow.stable"
IMAGE = "kitaru.local/probe:never-run"
BY, CLAIM, REASON = "kitaru.dev/changed-by", "kitaru.dev/change-generation", "kitaru.dev/reason"


def route_now(namespace: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        kubectl("get", "froute", ROUTE, "-o", "json", namespace=namespace).stdout
    )
    return found


def patch(api: client.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> tuple[int, str]:
    try:
        api.patch_namespaced_custom_object(
            "kitaru.dev", "v1alpha1", namespace, "flowroutes", ROUTE, body
        )
    except ApiException as exc:
        return int(exc.status), str(json.loads(exc.body).get("message"))
    return 200, ""


def stamp(by: str, claim: int, reason: str) -> dict[str, Any]:
    return {"metadata": {"annotations": {BY: by, CLAIM: str(claim), REASON: reason}}}


def test_a_stamp_signs_only_the_write_that_makes_its_generation(roles: str, namespace: str) -> None:
    kubectl("apply", "-f", "-", namespace=namespace, input=json.dumps({
        "apiVersion": "v1", "kind": "List", "items": [
            build_deployment(FLOW, v, entrypoint="probe:run", image=IMAGE) for v in (1, 2)
        ] + [build_route(RouteView(FLOW, "stable", True, frozenset({1})))],
    }))  # fmt: skip
    bind(namespace, "mallory", f"{roles}-producer")
    token = token_of(namespace, "mallory")
    mallory = client.CustomObjectsApi(token_client(token))
    me = f"system:serviceaccount:{namespace}:mallory"
    generation = route_now(namespace)["metadata"]["generation"]

    # Step one of the exploit: a metadata-only write claims the next generation for alice.
    code, message = patch(mallory, namespace, stamp("alice", generation + 1, "alice approved"))
    assert code == 403, (code, message)
    assert f"annotation {BY} must name the user making the request ({me}), not alice" in message
    # Nor may mallory pre-sign the next generation with her own name, or sign a
    # metadata-only write: a stamp signs a change of the spec, of the generation it makes.
    code, message = patch(mallory, namespace, stamp(me, generation + 1, "later"))
    assert code == 403 and f"must be the generation this write makes ({generation})" in message
    code, message = patch(mallory, namespace, stamp(me, generation, "re-signed"))
    assert code == 403 and "this write leaves its spec as it was" in message, message
    # A stamp copied from elsewhere (an exported manifest) is refused on a spec write too.
    stale = {**stamp(me, generation + 5, "copied"), "spec": {"versions": [2]}}
    code, message = patch(mallory, namespace, stale)
    assert code == 403 and f"must be the generation this write makes ({generation + 1})" in message

    # What the Kitaru client writes: her name, the generation the write makes.
    signed = {**stamp(me, generation + 1, "moving on"), "spec": {"versions": [2]}}
    assert patch(mallory, namespace, signed) == (200, "")
    annotations = route_now(namespace)["metadata"]["annotations"]
    assert (annotations[BY], annotations[CLAIM]) == (me, str(generation + 1))
    # A later write that leaves the stamp alone passes (it goes stale, or stays current
    # on a metadata-only write); removing the stamp passes (nothing is claimed then).
    assert patch(mallory, namespace, {"metadata": {"labels": {"team": "a"}}}) == (200, "")
    assert patch(mallory, namespace, {"spec": {"versions": [1]}}) == (200, "")
    unstamp = {"metadata": {"annotations": {BY: None, CLAIM: None, REASON: None}}}
    assert patch(mallory, namespace, unstamp) == (200, "")

    # The SDK as mallory signs its own writes and passes.
    kitaru_as(namespace, token).deployments.tag(FLOW, "stable", 2, exclusive=True, reason="ok")
    annotations = route_now(namespace)["metadata"]["annotations"]
    assert (annotations[BY], annotations[REASON]) == (me, "ok")
