"""Weighted, sticky routes against the real API server and the operator (a process):
issue 14 item 3. The API server keeps a split's rules for kubectl too; the operator
resolves each invocation once by weight (sticky by routing key) and records why; a
version a split names cannot be deleted; weight changes are recorded and rolled back.

The resolution test runs in a namespace whose quota allows no pod: what is checked is
the operator's resolution of real FlowInvocations (each gets its Job and its frozen
resolution chain), each by exactly the pure rule (the version of its bucket). That the
rule gives each version its weight's share is a property of the pure core, proven over
every split in tests/unit/test_split_properties.py; this tier no longer counts 1 000
invocations for it. Runs of a split tag to completion are in
tests/e2e/test_split_on_every_surface.py.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from kitaru.client import KitaruClient
from kitaru.client.connection import combine, load_kube_context
from kitaru.core.routing import pick_version, split_bucket
from support import KUBECONFIG, create, deployment, get, kubectl, route, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

FLOW = "research_agent"
SPLIT = [{"version": 2, "weight": 90}, {"version": 3, "weight": 10}]


def client_for(namespace: str) -> KitaruClient:
    env = {"KUBECONFIG": str(KUBECONFIG), "KITARU_PROJECT": namespace}
    return KitaruClient(combine(env, None, load_kube_context(env)))


def split_route(tag: str, split: list[dict[str, int]], *versions: int, **spec: Any) -> dict:
    body = route(FLOW, tag, *versions, exclusive=False)
    body["spec"].update(split=split, **spec)
    return body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            split_route("default", SPLIT, 2, 3),
            "the 'default' tag cannot be split: split another tag (e.g. stable)",
        ),
        (split_route("stable", SPLIT, 2, 3, exclusive=True), "a split tag is not exclusive"),
        (
            split_route("stable", SPLIT, 2, 4),
            "split names each of the tag's versions once, and no other",
        ),
        (
            split_route(
                "stable", [{"version": 2, "weight": 90}, {"version": 3, "weight": 20}], 2, 3
            ),
            "the weights of a split add up to 100",
        ),
        (
            split_route("stable", [{"version": 2, "weight": 50}, {"version": 2, "weight": 50}], 2),
            'spec.split[1]: Duplicate value: {"version":2}',
        ),
        (
            split_route("stable", [{"version": 2, "weight": 100}], 2),
            "should have at least 2 items",
        ),
        (
            split_route(
                "stable", [{"version": 2, "weight": 150}, {"version": 3, "weight": -50}], 2, 3
            ),
            "should be less than or equal to 100",
        ),
    ],
    ids=["default", "exclusive", "other-versions", "sum", "duplicate", "one", "range"],
)
def test_the_api_server_keeps_the_split_rules(namespace: str, body: dict, message: str) -> None:
    proc = create(body, namespace, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert get("froute", body["metadata"]["name"], namespace) is None


def resolved(namespace: str, selector: str) -> list[dict[str, Any]]:
    out = kubectl("get", "finv", "-l", selector, "-o", "json", namespace=namespace).stdout
    return [i for i in json.loads(out)["items"] if (i.get("status") or {}).get("resolved")]


def invocations(names: list[str], tag: str, batch: str, routing_key: str | None = None) -> dict:
    items = []
    for name in names:
        spec: dict[str, Any] = {"flow": FLOW, "tag": tag}
        if routing_key is not None:
            spec["routingKey"] = routing_key
        items.append(
            {
                "apiVersion": "kitaru.dev/v1alpha1",
                "kind": "FlowInvocation",
                "metadata": {"name": name, "labels": {"batch": batch}},
                "spec": spec,
            }
        )
    return {"apiVersion": "v1", "kind": "List", "items": items}


# Names whose buckets fall on both sides of a 90/10 split (4 of these 40 go to v3), so
# the operator is seen choosing each version; which one is the pure rule's to say.
SPREAD = [f"spread-{i}" for i in range(40)]


def test_a_split_tag_resolves_each_invocation_once_by_weight(
    running_operator: Any, namespace: str
) -> None:
    create(
        {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"},
         "spec": {"hard": {"pods": "0"}}},
        namespace,
    )  # fmt: skip
    client = client_for(namespace)
    for version in (1, 2, 3):
        create(deployment(FLOW, version), namespace)
    info = client.deployments.tag(FLOW, "stable", split={2: 90, 3: 10}, reason="canary v3")
    assert (info.mode, info.versions, info.split) == ("weighted", (2, 3), ((2, 90), (3, 10)))

    status = wait_for(
        lambda: (get("froute", "research-agent.stable", namespace) or {}).get("status"),
        timeout=30,
        message="the split route's status",
    )
    assert (status["mode"], status["splitSummary"]) == ("weighted", "2=90,3=10")
    wait_for(
        lambda: (
            (get("fdep", "research-agent-v3", namespace) or {}).get("status", {}).get("tagSummary")
            == "stable(10%)"
        ),
        timeout=30,
        message="v3 shows stable at 10 %",
    )
    table = kubectl("get", "froute", namespace=namespace).stdout
    assert "weighted" in table and "2=90,3=10" in table

    create(invocations(SPREAD, "stable", "spread"), namespace)
    runs = wait_for(
        lambda: r if len(r := resolved(namespace, "batch=spread")) == len(SPREAD) else None,
        timeout=120,
        interval=1,
        message=f"{len(SPREAD)} invocations resolved",
    )
    versions = Counter(r["status"]["resolved"]["version"] for r in runs)
    assert versions == {2: 36, 3: 4}, versions
    for run in runs:
        chain = run["status"]["resolved"]
        assert chain["split"]["split"] == SPLIT and chain["split"]["sticky"] is False
        assert chain["split"]["bucket"] == split_bucket(FLOW, run["metadata"]["name"])
        assert chain["version"] == pick_version(((2, 90), (3, 10)), chain["split"]["bucket"])
        assert run["status"]["jobName"] == run["metadata"]["name"]
        message = {c["type"]: c for c in run["status"]["conditions"]}["Resolved"]["message"]
        assert "(split 2=90,3=10: bucket" in message and "by invocation name" in message

    for key in ("user-7", "tenant/acme"):  # one lands on v3, the other on v2
        names = [f"{key.replace('/', '-')}-{i}" for i in range(10)]
        create(invocations(names, "stable", "sticky", routing_key=key), namespace)
    sticky = wait_for(
        lambda: r if len(r := resolved(namespace, "batch=sticky")) == 20 else None,
        timeout=60,
        message="20 keyed invocations resolved",
    )
    by_key: dict[str, set[int]] = {}
    for run in sticky:
        by_key.setdefault(run["spec"]["routingKey"], set()).add(
            run["status"]["resolved"]["version"]
        )
        assert run["status"]["resolved"]["split"]["sticky"] is True
    for key, got in by_key.items():
        assert got == {pick_version(((2, 90), (3, 10)), split_bucket(FLOW, key))}, key
    assert set().union(*by_key.values()) == {2, 3}


def test_a_split_guards_its_versions_and_is_recorded(running_operator: Any, namespace: str) -> None:
    client = client_for(namespace)
    for version in (1, 2, 3):
        create(deployment(FLOW, version), namespace)

    # The operator records a route's changes as it sees them: two writes within its lag
    # would reach it as one. Each change here is recorded before the next is made.
    def recorded(count: int) -> None:
        wait_for(
            lambda: len(client.deployments.history(FLOW, "stable")["changes"]) == count,
            timeout=30,
            message=f"{count} recorded changes of stable",
        )

    client.deployments.tag(FLOW, "stable", 2, exclusive=True)
    recorded(1)
    client.deployments.tag(FLOW, "stable", split="2=90,3=10")
    wait_for(
        lambda: (
            (get("fdep", "research-agent-v3", namespace) or {}).get("status", {}).get("tagSummary")
        ),
        timeout=30,
        message="v3 tagged",
    )
    refused = kubectl("delete", "fdep", "research-agent-v3", namespace=namespace, check=False)
    assert refused.returncode != 0
    assert "version 3 of flow research_agent holds the split tag stable" in refused.stderr
    recorded(2)

    client.deployments.tag(FLOW, "stable", split="2=50,3=50", reason="more traffic")
    changes = wait_for(
        lambda: c if len(c := client.deployments.history(FLOW, "stable")["changes"]) == 3 else None,
        timeout=30,
        message="three recorded changes of stable",
    )
    added, reweighted = changes[1], changes[2]
    assert (added["action"], added["toSplit"]) == ("added", SPLIT)
    assert reweighted["action"] == "reweighted" and reweighted["reason"] == "more traffic"
    assert reweighted["fromSplit"] == SPLIT
    assert reweighted["toSplit"] == [{"version": 2, "weight": 50}, {"version": 3, "weight": 50}]

    back = client.deployments.rollback(FLOW, "stable")
    assert back.split == ((2, 90), (3, 10))
    wait_for(
        lambda: len(client.deployments.history(FLOW, "stable")["changes"]) == 4,
        timeout=30,
        message="the rollback recorded",
    )
    # Untagged, the version may go.
    client.deployments.untag(FLOW, "stable")
    assert get("froute", "research-agent.stable", namespace) is None
    wait_for(
        lambda: (
            kubectl(
                "delete", "fdep", "research-agent-v3", namespace=namespace, check=False
            ).returncode
            == 0
        ),
        timeout=30,
        message="v3 deletable once stable is gone",
    )
