"""Expiring tags against the real API server and the operator (a process): issue 14
item 5's acceptance, "a tag that expires" — a shared and an exclusive tag removed at
their expiry and recorded by the operator as expired; a tag re-tagged without an expiry
before it came stays; a kubectl-set expiresAt is acted on too."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kitaru.client import KitaruClient
from kitaru.client.connection import combine, load_kube_context
from kitaru.core.expiry import format_expiry
from kitaru.core.history import parse_time
from support import KUBECONFIG, OperatorProcess, create, deployment, kubectl, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

FLOW = "research_agent"


def client_for(namespace: str) -> KitaruClient:
    env = {"KUBECONFIG": str(KUBECONFIG), "KITARU_PROJECT": namespace}
    return KitaruClient(combine(env, None, load_kube_context(env)))


def route(namespace: str, tag: str) -> dict[str, Any] | None:
    proc = kubectl(
        "get", "froute", f"research-agent.{tag}", "-o", "json",
        "--ignore-not-found", namespace=namespace,
    )  # fmt: skip
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def expired(client: KitaruClient, tag: str) -> dict[str, Any] | None:
    """The recorded delete of `tag`, once the operator has recorded it."""
    changes = client.deployments.history(FLOW, tag)["changes"]
    return next((c for c in changes if c["action"] == "deleted"), None)


def test_a_tag_that_expires(running_operator: OperatorProcess, namespace: str) -> None:
    client = client_for(namespace)
    for version in (1, 2):
        create(deployment(FLOW, version), namespace)
    before = datetime.now(UTC).replace(microsecond=0)
    shared = client.deployments.tag(FLOW, "canary", 2, expires="3s")
    exclusive = client.deployments.tag(FLOW, "preview", 2, exclusive=True, expires="3s")
    kept = client.deployments.tag(FLOW, "beta", 1, expires="3s")
    for info in (shared, exclusive, kept):
        assert info.expires_at is not None
        assert info.to_json()["expires_at"] == info.expires_at
        assert before + timedelta(seconds=3) <= parse_time(info.expires_at)
    # Re-tagging without --expires makes the tag permanent again.
    assert client.deployments.tag(FLOW, "beta", 1).expires_at is None
    assert "expiresAt" not in (route(namespace, "beta") or {}).get("spec", {})
    shown = {r.tag: r.expires_at for r in client.deployments.routes(FLOW)}
    assert shown["canary"] == shared.expires_at and shown["beta"] is None

    for tag, info in (("canary", shared), ("preview", exclusive)):
        record = wait_for(
            lambda t=tag: expired(client, t), timeout=30, message=f"{tag} recorded as expired"
        )
        assert (record["by"], record["bySource"], record["reason"]) == (
            "kitaru-operator", "operator", "expired",
        ), running_operator.log()[-6000:]  # fmt: skip
        assert record["fromVersions"] == [2] and record["toVersions"] == []
        assert record["at"] == info.expires_at
        assert route(namespace, tag) is None
    # beta's first expiry (as early as the others') has passed: it stayed.
    assert route(namespace, "beta") is not None
    assert [c["action"] for c in client.deployments.history(FLOW, "beta")["changes"]] == ["created"]
    # Version 2 held the exclusive tag preview; with it gone it can be deleted.
    client.deployments.delete(FLOW, 2)


def test_an_expiry_set_with_kubectl_is_acted_on(
    running_operator: OperatorProcess, namespace: str
) -> None:
    client = client_for(namespace)
    create(deployment(FLOW, 1), namespace)
    at = format_expiry(datetime.now(UTC) + timedelta(seconds=3))
    create(
        {
            "apiVersion": "kitaru.dev/v1alpha1",
            "kind": "FlowRoute",
            "metadata": {"name": "research-agent.nightly"},
            "spec": {
                "flow": FLOW, "tag": "nightly", "exclusive": True, "versions": [1],
                "expiresAt": at,
            },
        },
        namespace,
    )  # fmt: skip
    assert client.deployments.routes(FLOW)[-1].expires_at == at
    record = wait_for(
        lambda: expired(client, "nightly"), timeout=30, message="nightly recorded as expired"
    )
    assert (record["by"], record["reason"], record["at"]) == ("kitaru-operator", "expired", at)
    assert route(namespace, "nightly") is None
