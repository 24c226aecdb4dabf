"""Issue 23, item 1: no tenant stalls the operator.

A producer's input schema and a consumer's inputs used to be checked on the operator's
one event loop: a backtracking pattern blocked every namespace for hours, a recursive
schema ended the resync loop, and the loop ignored SIGTERM meanwhile. Here one operator
watches an attacker's namespace and two victims'. The attacker's hostile runs must each
fail cleanly, alone, while the victims' runs are dispatched as fast as without them.

Dispatch (invocation created -> its Job created) is what is measured, so the victims'
namespaces allow no pods (a ResourceQuota): the node is not what is tested. The test
alternates windows with and without the attack, so load on a shared 2-core machine
weighs on both groups alike, and compares their medians.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kitaru.core.manifests import build_invocation, build_route
from kitaru.core.names import GROUP, INVOCATIONS
from kitaru.core.routing import RouteView
from support import (
    TEST_NAMESPACE_LABELS,
    OperatorProcess,
    create,
    deployment,
    kubectl,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("crds_installed")

WINDOWS = 20  # per group: 20 with the attack, 20 without
PER_WINDOW = 3  # victims' runs started together in each window: 60 samples a group
REDOS = {"type": "object", "properties": {"x": {"type": "string", "pattern": "^(a|a)*$"}}}
RECURSIVE = {"$ref": "#"}
PLAIN = {"type": "object", "properties": {"topic": {"type": "string"}}}
NO_PODS = {
    "apiVersion": "v1",
    "kind": "ResourceQuota",
    "metadata": {"name": "no-pods"},
    "spec": {"hard": {"pods": "0"}},
}


def _version(flow: str, schema: dict[str, Any]) -> dict[str, Any]:
    body = deployment(flow, 1)
    body["spec"]["inputSchema"] = schema  # as kubectl or GitOps would: no client checks
    return body


def _default(flow: str) -> dict[str, Any]:
    return build_route(RouteView(flow, "default", True, frozenset({1})), high_water_mark=1)


class JobArrivals:
    """When each Job of some namespaces appeared, by (namespace, name): a watch per
    namespace in a thread, timed with the same clock as the creates."""

    def __init__(self, k8s: kubernetes.client.ApiClient, namespaces: list[str]) -> None:
        self.batch = kubernetes.client.BatchV1Api(k8s)
        self.seen: dict[tuple[str, str], float] = {}
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._watch, args=(ns,), daemon=True) for ns in namespaces
        ]
        for thread in self.threads:
            thread.start()

    def _watch(self, namespace: str) -> None:
        listed = self.batch.list_namespaced_job(namespace)
        version = listed.metadata.resource_version
        while not self.stopping.is_set():
            stream = kubernetes.watch.Watch().stream(
                self.batch.list_namespaced_job,
                namespace,
                resource_version=version,
                timeout_seconds=5,
            )
            for event in stream:
                job = event["object"]
                version = job.metadata.resource_version
                if event["type"] == "ADDED":
                    self.seen.setdefault((namespace, job.metadata.name), time.monotonic())

    def stop(self) -> None:
        self.stopping.set()


@pytest.fixture
def victims(k8s: kubernetes.client.ApiClient) -> Iterator[list[str]]:
    core = kubernetes.client.CoreV1Api(k8s)
    names = [f"t-victim-{i}-{uuid.uuid4().hex[:6]}" for i in (1, 2)]
    for name in names:
        core.create_namespace(
            kubernetes.client.V1Namespace(
                metadata=kubernetes.client.V1ObjectMeta(name=name, labels=TEST_NAMESPACE_LABELS)
            )
        )
    yield names
    for name in names:
        core.delete_namespace(name, propagation_policy="Background")


def test_hostile_schemas_and_inputs_fail_alone_and_stall_no_one(
    namespace: str,
    victims: list[str],
    k8s: kubernetes.client.ApiClient,
    tmp_path: Path,
) -> None:
    attacker = namespace
    custom = kubernetes.client.CustomObjectsApi(k8s)
    for victim in victims:
        create(NO_PODS, victim)
        create(_version("victim", PLAIN), victim)
        create(_default("victim"), victim)
    create(NO_PODS, attacker)
    for flow, schema in (("redos", REDOS), ("recursive", RECURSIVE), ("plain", PLAIN)):
        create(_version(flow, schema), attacker)
        create(_default(flow), attacker)
    operator = OperatorProcess(
        attacker,
        tmp_path,
        extra_args=tuple(arg for victim in victims for arg in ("--namespace", victim)),
    )
    operator.start()
    arrivals = JobArrivals(k8s, victims)

    def invoke(ns: str, flow: str, inputs: dict[str, Any]) -> str:
        body = build_invocation(flow, inputs=inputs)
        made = custom.create_namespaced_custom_object(GROUP, "v1alpha1", ns, INVOCATIONS, body)
        return str(made["metadata"]["name"])

    def dispatch_seconds(count: int) -> list[float]:
        """Start `count` victims' runs back to back, across both namespaces; the time
        each took to get its Job."""
        sent = []
        for index in range(count):
            victim = victims[index % 2]
            started = time.monotonic()
            sent.append((victim, invoke(victim, "victim", {"topic": "t"}), started))
        took = []
        for victim, name, started in sent:
            arrived = wait_for(
                lambda v=victim, n=name: arrivals.seen.get((v, n)),
                timeout=30,
                interval=0.005,
                message=f"job of {victim}/{name}",
            )
            took.append(float(arrived) - started)
        # Measured: cancel them, so that runs waiting for a pod the quota refuses do not
        # pile up retries that weigh on the windows after them.
        for victim, name, _ in sent:
            custom.patch_namespaced_custom_object(
                GROUP, "v1alpha1", victim, INVOCATIONS, name, {"spec": {"cancelRequested": True}}
            )
        return took

    hostile: dict[str, str] = {}
    quiet: list[float] = []
    attacked: list[float] = []
    try:
        dispatch_seconds(2)  # warm: the operator's first check starts its worker
        hostile["huge"] = invoke(attacker, "plain", {"topic": "x" * 1_500_000})
        # Windows in the order ABBA...: a drift of the machine's load weighs on both alike.
        for index, attack in enumerate([False, True, True, False] * (WINDOWS // 2)):
            # Each window sends the attacker's namespace two runs whose input check fails,
            # so the API server does the same work; only what the checks meet differs.
            if attack:
                hostile[f"redos-{index}"] = invoke(attacker, "redos", {"x": "a" * 44 + "b"})
                hostile[f"recursive-{index}"] = invoke(attacker, "recursive", {"x": 1})
                attacked += dispatch_seconds(PER_WINDOW)
            else:
                invoke(attacker, "plain", {"topic": 5})
                invoke(attacker, "plain", {"topic": 6})
                quiet += dispatch_seconds(PER_WINDOW)
        assert operator.ready()  # alive and serving its health endpoint throughout
    finally:
        arrivals.stop()
        try:
            operator.stop()
        finally:
            operator.kill()  # the old code ignored SIGTERM while blocked

    def failure(name: str) -> tuple[str, str] | None:
        obj = custom.get_namespaced_custom_object(GROUP, "v1alpha1", attacker, INVOCATIONS, name)
        status = obj.get("status") or {}
        return (status["reason"], status["message"]) if status.get("phase") == "Failed" else None

    for key, name in hostile.items():
        reason, message = wait_for(lambda n=name: failure(n), timeout=60, message=key)
        assert reason == "InvalidInputs", (key, message)
        if key.startswith("redos"):
            assert "does not match '^(a|a)*$'" in message
        elif key.startswith("recursive"):
            assert "input schema is invalid: # applies itself to the same value again" in message
        else:
            assert "inputs are 1,500,012 bytes as JSON; at most 65,536 (64 KiB)" in message
    jobs = json.loads(kubectl("get", "jobs", "-o", "json", namespace=attacker).stdout)["items"]
    assert jobs == []  # no hostile run got a Job

    quiet_p50, attacked_p50 = statistics.median(quiet), statistics.median(attacked)
    print(
        f"dispatch p50 without the attack {quiet_p50 * 1000:.1f} ms, with it "
        f"{attacked_p50 * 1000:.1f} ms ({attacked_p50 / quiet_p50:.2f}x) over {len(quiet)} each"
    )
    assert attacked_p50 <= 1.2 * quiet_p50, (quiet, attacked)
    assert "Traceback" not in operator.log(), operator.log()


def test_the_operator_stops_promptly_on_sigterm_while_a_tenant_attacks(
    namespace: str, tmp_path: Path
) -> None:
    """Seen on the old code: blocked in a pattern match, it ignored SIGTERM for minutes
    (and in a cluster would have been SIGKILLed into a crash loop)."""
    create(NO_PODS, namespace)
    create(_version("redos", REDOS), namespace)
    create(_default("redos"), namespace)
    operator = OperatorProcess(namespace, tmp_path)
    operator.start()
    try:
        for _ in range(3):
            create(build_invocation("redos", inputs={"x": "a" * 44 + "b"}), namespace)
        wait_for(
            lambda: (
                "InvalidInputs" in kubectl("get", "finv", "-o", "json", namespace=namespace).stdout
            ),
            timeout=30,
            message="a hostile run failed",
        )
        assert operator.proc is not None
        started = time.monotonic()
        operator.proc.terminate()
        operator.proc.wait(timeout=20)
        assert time.monotonic() - started < 10
    finally:
        operator.kill()
