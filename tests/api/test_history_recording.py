"""Route history against the real API server and the operator (a process): the
acceptance story of issue 14 item 1 — move `stable`, roll it back, replay it with `--at`
— plus who a kubectl write is attributed to, a forged attribution refused by admission,
the size bound, and an operator restart that records nothing twice."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kitaru.client import KitaruClient
from kitaru.client.connection import combine, load_kube_context
from kitaru.core.history import format_time, parse_time
from support import KUBECONFIG, OperatorProcess, create, deployment, kubectl, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

FLOW = "research_agent"
STABLE = "research-agent.stable"
LIMIT = 8


def client_for(namespace: str) -> KitaruClient:
    """The SDK on the admin kubeconfig, the namespace as the project."""
    env = {"KUBECONFIG": str(KUBECONFIG), "KITARU_PROJECT": namespace}
    return KitaruClient(combine(env, None, load_kube_context(env)))


def changes(client: KitaruClient, tag: str | None = None) -> list[dict[str, Any]]:
    return list(client.deployments.history(FLOW, tag)["changes"])


def recorded(client: KitaruClient, count: int) -> list[dict[str, Any]]:
    """Wait until the history holds `count` changes of `stable`; return them."""
    return wait_for(
        lambda: (c := changes(client, "stable")) and len(c) >= count and c,
        timeout=30,
        message=f"{count} recorded changes of stable",
    )


def stable_versions(namespace: str) -> list[int]:
    proc = kubectl("get", "froute", STABLE, "-o", "json", namespace=namespace)
    return list(json.loads(proc.stdout)["spec"]["versions"])


def generation(namespace: str) -> int:
    proc = kubectl("get", "froute", STABLE, "-o", "json", namespace=namespace)
    return int(json.loads(proc.stdout)["metadata"]["generation"])


def patch_route(namespace: str, patch: dict[str, Any], check: bool = True) -> Any:
    """What an admin's `kubectl patch` does: no Kitaru client, no annotations of ours."""
    return kubectl(
        "patch", "froute", STABLE, "--type=merge", "-p", json.dumps(patch),
        namespace=namespace, check=check,
    )  # fmt: skip


def next_second(after: str) -> datetime:
    """Wait until the clock is past `after` (whole seconds, as the API server records
    times) and return the current second: a time strictly after that change."""
    wait_for(
        lambda: datetime.now(UTC) >= parse_time(after) + timedelta(seconds=1),
        timeout=5,
        message=f"the clock passes {after}",
    )
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def operator(namespace: str, tmp_path: Path) -> Any:
    op = OperatorProcess(
        namespace, tmp_path, resync_seconds=5, extra_args=("--route-history-limit", str(LIMIT))
    )
    op.start()
    yield op
    op.stop()
    assert "Traceback" not in op.log(), op.log()


def test_move_rollback_replay_and_attribution(operator: OperatorProcess, namespace: str) -> None:
    client = client_for(namespace)
    for version in (1, 2, 3):
        create(deployment(FLOW, version), namespace)
    client.deployments.tag(FLOW, "stable", 2, exclusive=True, reason="first release")
    me = client.kube.username()
    assert me
    (created,) = recorded(client, 1)
    assert (created["action"], created["toVersions"], created["fromVersions"]) == (
        "created", [2], [],
    )  # fmt: skip
    assert (created["by"], created["bySource"], created["reason"]) == (
        me, "annotation", "first release",
    )  # fmt: skip

    client.deployments.tag(FLOW, "stable", 3, exclusive=True)
    moved = recorded(client, 2)[-1]
    assert (moved["action"], moved["fromVersions"], moved["toVersions"]) == ("moved", [2], [3])
    between = next_second(moved["at"])
    wait_for(lambda: datetime.now(UTC) >= between + timedelta(seconds=1), timeout=5)

    route = client.deployments.rollback(FLOW, "stable")
    assert list(route.versions) == [2] and stable_versions(namespace) == [2]
    back = recorded(client, 3)[-1]
    assert (back["fromVersions"], back["toVersions"], back["reason"], back["by"]) == (
        [3], [2], "rollback", me,
    )  # fmt: skip
    assert parse_time(back["at"]) > between >= parse_time(moved["at"])

    replay = client.deployments.history(FLOW, "stable", at=format_time(between))
    assert replay["routes"] == {"stable": [3]}
    everything = client.deployments.history(FLOW, at=between)
    assert everything["routes"]["stable"] == [3] and everything["routes"]["default"] == [1]

    # A kubectl write in the same second as the rollback: the client's claim names an
    # older generation, so managedFields names who did it (not the client's entry).
    patch_route(namespace, {"spec": {"versions": [1]}})
    by_kubectl = recorded(client, 4)[-1]
    assert (by_kubectl["fromVersions"], by_kubectl["toVersions"]) == ([2], [1])
    assert (by_kubectl["by"], by_kubectl["bySource"], by_kubectl["reason"]) == (
        "kubectl-patch", "managedFields", "",
    )  # fmt: skip

    # A forged claim for the generation the write makes is refused by admission.
    forged = {
        "metadata": {
            "annotations": {
                "kitaru.dev/changed-by": "someone-else",
                "kitaru.dev/change-generation": str(generation(namespace) + 1),
            }
        },
        "spec": {"versions": [3]},
    }
    refused = wait_for(
        lambda: (p := patch_route(namespace, forged, check=False)).returncode != 0 and p,
        timeout=60,
        message="the forged changed-by refused",
    )
    assert "kitaru-route-changed-by" in refused.stderr, refused.stderr
    assert "must name the user making the request" in refused.stderr, refused.stderr
    assert stable_versions(namespace) == [1]


def test_bounded_and_restart_records_nothing_twice(
    operator: OperatorProcess, namespace: str
) -> None:
    client = client_for(namespace)
    for version in (1, 2):
        create(deployment(FLOW, version), namespace)
    client.deployments.tag(FLOW, "stable", 1, exclusive=True)
    seq = recorded(client, 1)[-1]["seq"]
    for n in range(LIMIT + 3):
        target = 2 if n % 2 == 0 else 1
        client.deployments.tag(FLOW, "stable", target, exclusive=True)
        last = wait_for(
            lambda s=seq: (c := changes(client, "stable")[-1])["seq"] > s and c,
            timeout=30,
            message=f"move {n} recorded",
        )
        assert (last["seq"], last["toVersions"]) == (seq + 1, [target])
        seq = last["seq"]
    history = client.kube.get("flowhistories", "research-agent")
    assert history is not None
    kept = history["spec"]["changes"]
    assert len(kept) == LIMIT
    seqs = [c["seq"] for c in kept]
    assert seqs == list(range(seqs[0], seqs[0] + LIMIT))
    last_seq = seqs[-1]
    assert history["spec"]["nextSeq"] == last_seq + 1

    # Restart: nothing changed, nothing recorded; a change made while it was away is
    # recorded once.
    operator.stop()
    before = stable_versions(namespace)
    client.deployments.tag(FLOW, "stable", 2 if before == [1] else 1, exclusive=True)
    operator.start()
    after = wait_for(
        lambda: (c := changes(client))[-1]["seq"] == last_seq + 1 and c,
        timeout=30,
        message="the change made while the operator was away is recorded",
    )
    assert (after[-1]["fromVersions"], after[-1]["toVersions"]) == (
        before, stable_versions(namespace),
    )  # fmt: skip
    # One more change, after the restart: recorded with the next number, nothing between.
    client.deployments.tag(FLOW, "stable", before[0], exclusive=True)
    final = wait_for(lambda: (c := changes(client))[-1]["seq"] == last_seq + 2 and c, timeout=30)
    assert [c["seq"] for c in final][-3:] == [last_seq, last_seq + 1, last_seq + 2]
    assert len(final) == LIMIT
    # Each change was logged once, over both runs: seq 1 .. last_seq + 2.
    logged = operator.log().count(f"route history {namespace}/{FLOW} #")
    assert logged == last_seq + 2
