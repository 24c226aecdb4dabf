"""Gated promotion against the real API server and the operator (a process): the
acceptance story of issue 14 item 4 — a promotion that fires when the canary has 20
successful runs and one that does not when it has failures — plus a promotion that
survives an operator restart while waiting, cancel, CEL on kubectl, and the move
recorded in the route history with the numbers.

No pod runs on this tier: the canary's runs are FlowInvocations written finished (as
the operator would leave them) while no operator runs, so nothing races to dispatch
them; the operator then counts them from its list and its finished-run informer."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kitaru.client import KitaruClient
from kitaru.client.connection import combine, load_kube_context
from support import KUBECONFIG, OperatorProcess, create, deployment, kubectl, route, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

FLOW = "research_agent"
HIGHEST = {"kitaru.dev/highest-version": "2"}


def client_for(namespace: str) -> KitaruClient:
    env = {"KUBECONFIG": str(KUBECONFIG), "KITARU_PROJECT": namespace}
    return KitaruClient(combine(env, None, load_kube_context(env)))


def flow_with_canary(namespace: str) -> None:
    """v1 is default and stable, v2 the canary."""
    for version in (1, 2):
        create(deployment(FLOW, version, image="kitaru.local/never:run"), namespace)
    create(route(FLOW, "default", 1, annotations=HIGHEST), namespace)
    create(route(FLOW, "stable", 1), namespace)
    create(route(FLOW, "canary", 2), namespace)


def finished_runs(namespace: str, prefix: str, version: int, completed: int, failed: int) -> None:
    """Invocations of `version` as the operator leaves them when they finish."""
    for index in range(completed + failed):
        name = f"{prefix}-{index}"
        create(
            {
                "apiVersion": "kitaru.dev/v1alpha1",
                "kind": "FlowInvocation",
                "metadata": {"name": name},
                "spec": {"flow": FLOW, "tag": "canary"},
            },
            namespace,
        )
        phase = "Completed" if index < completed else "Failed"
        status = {
            "phase": phase,
            "reason": phase,
            "completionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "resolved": {
                "selector": "tag",
                "tag": "canary",
                "version": version,
                "deployment": f"research-agent-v{version}",
                "snapshotName": f"kitaru::{FLOW}::v{version}",
                "image": "kitaru.local/never:run",
                "inputsHash": "0" * 64,
            },
        }
        kubectl(
            "patch", "finv", name, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}), namespace=namespace,
        )  # fmt: skip


def promotion(client: KitaruClient, name: str) -> Any:
    return next(p for p in client.deployments.promotions(FLOW) if p.name == name)


def final(client: KitaruClient, name: str) -> Any:
    return wait_for(
        lambda: (p := promotion(client, name)).phase not in (None, "Waiting") and p,
        timeout=60,
        message=f"promotion {name} decided",
    )


def stable(namespace: str) -> list[int]:
    proc = kubectl("get", "froute", "research-agent.stable", "-o", "json", namespace=namespace)
    return list(json.loads(proc.stdout)["spec"]["versions"])


@pytest.fixture
def operator(namespace: str, tmp_path: Path) -> Any:
    op = OperatorProcess(namespace, tmp_path, resync_seconds=5)
    yield op
    op.stop()
    assert "Traceback" not in op.log(), op.log()


def test_twenty_successful_runs_promote_and_the_history_has_the_numbers(
    namespace: str, operator: Any
) -> None:
    client = client_for(namespace)
    flow_with_canary(namespace)
    created = client.deployments.promote(FLOW, "canary", "stable", min_runs=20, min_success=0.95)
    assert created.name.startswith("research-agent.stable-")
    finished_runs(namespace, "ok", 2, completed=20, failed=0)
    finished_runs(namespace, "old", 1, completed=0, failed=3)  # not the candidate's
    operator.start()
    done = final(client, created.name)
    assert (done.phase, done.phase_reason, done.candidate_version) == ("Promoted", "GateMet", 2)
    assert (done.runs, done.succeeded, done.failed, done.success_rate) == (20, 20, 0, 1.0)
    assert stable(namespace) == [2]
    changes = wait_for(
        lambda: [c for c in client.deployments.history(FLOW, "stable")["changes"]
                 if c["action"] == "moved"],
        timeout=30,
        message="the move recorded",
    )  # fmt: skip
    assert changes[-1]["fromVersions"] == [1] and changes[-1]["toVersions"] == [2]
    assert changes[-1]["reason"] == (
        f"promotion {created.name}: 20 runs, 20 completed, 0 failed, success 1.00 >= 0.95"
    )
    assert changes[-1]["bySource"] == "annotation" and changes[-1]["by"]


def test_failures_below_the_gate_do_not_promote(namespace: str, operator: Any) -> None:
    client = client_for(namespace)
    flow_with_canary(namespace)
    created = client.deployments.promote(FLOW, "canary", "stable", min_runs=20, min_success=0.95)
    finished_runs(namespace, "run", 2, completed=17, failed=3)
    operator.start()
    done = final(client, created.name)
    assert (done.phase, done.phase_reason) == ("NotPromoted", "GateFailed")
    assert done.message.startswith("success 0.85 < 0.95 after 20 runs of version 2")
    assert stable(namespace) == [1]
    events = kubectl("get", "events", "-o", "json", namespace=namespace).stdout
    assert "GateFailed" in events


def test_a_waiting_promotion_survives_a_restart_and_counts_what_finished_meanwhile(
    namespace: str, operator: Any
) -> None:
    client = client_for(namespace)
    flow_with_canary(namespace)
    operator.start()
    created = client.deployments.promote(FLOW, "canary", "stable", min_runs=3)
    waiting = wait_for(
        lambda: (p := promotion(client, created.name)).phase == "Waiting" and p,
        timeout=30,
        message="waiting",
    )
    assert waiting.message == "0 of 3 runs of version 2 finished"
    operator.stop()
    finished_runs(namespace, "run", 2, completed=3, failed=0)
    operator.start()
    done = final(client, created.name)
    assert (done.phase, done.runs) == ("Promoted", 3)
    assert stable(namespace) == [2]


def test_cancel_moves_nothing_and_a_second_promotion_of_a_tag_is_refused(
    namespace: str, operator: Any
) -> None:
    from kitaru.client.errors import Conflict, NotFound

    client = client_for(namespace)
    flow_with_canary(namespace)
    operator.start()
    created = client.deployments.promote(FLOW, "canary", "stable", after="1h")
    with pytest.raises(Conflict, match="already waits to move tag 'stable'") as refused:
        client.deployments.promote(FLOW, "canary", "stable")
    assert refused.value.kind == "PromotionPending"
    (cancelled,) = client.deployments.cancel_promotion(FLOW, "stable")
    assert cancelled.name == created.name
    done = final(client, created.name)
    assert (done.phase, done.phase_reason) == ("Cancelled", "Cancelled")
    assert stable(namespace) == [1]
    with pytest.raises(NotFound) as none_left:
        client.deployments.cancel_promotion(FLOW, "stable")
    assert none_left.value.kind == "PromotionNotFound"


def test_kubectl_gets_the_same_rules(namespace: str) -> None:
    body = {
        "apiVersion": "kitaru.dev/v1alpha1",
        "kind": "FlowPromotion",
        "metadata": {"name": "same"},
        "spec": {"flow": FLOW, "fromTag": "stable", "toTag": "stable"},
    }
    assert "fromTag and toTag must differ" in create(body, namespace, check=False).stderr
    body["spec"] = {"flow": FLOW, "fromTag": "canary", "toTag": "stable", "minSuccess": 1.5}
    assert "spec.minSuccess" in create(body, namespace, check=False).stderr
    body["spec"] = {"flow": FLOW, "fromTag": "canary", "toTag": "stable"}
    create(body, namespace)
    proc = kubectl(
        "patch", "fprom", "same", "--type=merge", "-p", '{"spec": {"minRuns": 1}}',
        namespace=namespace, check=False,
    )  # fmt: skip
    assert "gate is immutable" in proc.stderr
    kubectl(
        "patch", "fprom", "same", "--type=merge", "-p", '{"spec": {"cancelRequested": true}}',
        namespace=namespace,
    )  # fmt: skip
    row = kubectl("get", "fprom", "same", "--no-headers", namespace=namespace).stdout.split()
    assert row[:3] == ["same", FLOW, "canary"]


def fprom(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kitaru.dev/v1alpha1",
        "kind": "FlowPromotion",
        "metadata": {"name": name},
        "spec": {"flow": FLOW, "fromTag": "canary", "toTag": "stable", **spec},
    }


def test_kubectl_promotions_are_decided_by_the_same_rules(namespace: str, operator: Any) -> None:
    client = client_for(namespace)
    flow_with_canary(namespace)
    create(route(FLOW, "benchmark", 1, 2, exclusive=False), namespace)
    operator.start()

    create(fprom("shared", fromTag="benchmark"), namespace)
    shared = final(client, "shared")
    assert (shared.phase, shared.phase_reason) == ("NotPromoted", "AmbiguousTag")
    assert "a promotion needs one candidate version" in shared.message

    create(fprom("first", minRuns=5), namespace)
    wait_for(
        lambda: promotion(client, "first").phase == "Waiting", timeout=30, message="first waits"
    )
    create(fprom("second", minRuns=5), namespace)
    second = final(client, "second")
    assert (second.phase, second.phase_reason) == ("NotPromoted", "AnotherPromotionPending")
    assert "promotion first already waits to move tag 'stable'" in second.message

    kubectl(
        "patch", "froute", "research-agent.canary", "--type=merge",
        "-p", '{"spec": {"versions": [1]}}', namespace=namespace,
    )  # fmt: skip
    moved = final(client, "first")
    assert (moved.phase, moved.phase_reason, moved.candidate_version) == (
        "NotPromoted",
        "CandidateMoved",
        2,
    )
    assert stable(namespace) == [1]
    shown = kubectl("get", "fprom", "-o", "wide", namespace=namespace).stdout
    assert "CandidateMoved" not in shown and "tag 'canary' moved from version 2 to 1" in shown
