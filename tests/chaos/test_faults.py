"""The fault suite: a burst of invocations while every component of the cluster and the
operator crash and come back. Nothing is lost, nothing runs twice, every result is right.

Faults, one after the other while invocations keep arriving: kube-apiserver, etcd, the
operator (SIGKILL), the kubelet, the operator again, containerd. Each is a SIGKILL and a
restart with the same command (`python -m kitaru_localnode.cluster restart`); the time
until the cluster answers again is printed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from flow_support import FINISHED, GROUP, VERSION, Kitaru
from kitaru.core.manifests import build_invocation
from support import REPO, OperatorProcess, kubectl, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")
# Each fault falls inside the burst with runs created before, during and after it, and
# runs on the node throughout: 120 runs (each a pod) prove that as 300 did, in less time.
BURST = 120
RATE = 4.0  # invocations per second: the burst lasts 30 s, the faults fall inside it


def restart(component: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "kitaru_localnode.cluster", "restart", component],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )


def api_answers() -> bool:
    return kubectl("get", "--raw", "/readyz", check=False, timeout=5).returncode == 0


def node_ready() -> bool:
    proc = kubectl("get", "nodes", "-o", "json", check=False, timeout=5)
    if proc.returncode != 0:
        return False
    (node,) = json.loads(proc.stdout)["items"]
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    return bool(ready) and ready[0]["status"] == "True"


class Burst(threading.Thread):
    """Creates the invocations at a steady rate; a create that fails while the API server
    is away is tried again (409 then means the first try got through)."""

    def __init__(self, kitaru: Kitaru) -> None:
        super().__init__(daemon=True)
        self.kitaru = kitaru
        self.created: list[str] = []

    def run(self) -> None:
        origin = time.monotonic()
        for index in range(BURST):
            time.sleep(max(0.0, origin + index / RATE - time.monotonic()))
            name = f"sq-{index:03d}"
            body = build_invocation("square", name=name, inputs={"n": index})
            deadline = time.monotonic() + 120
            while True:
                try:
                    self.kitaru.custom.create_namespaced_custom_object(
                        GROUP, VERSION, self.kitaru.ns, "flowinvocations", body
                    )
                    break
                except kubernetes.client.ApiException as exc:
                    if exc.status == 409:
                        break
                    if time.monotonic() > deadline:
                        raise
                except Exception:  # connection refused/reset while the API server restarts
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.2)
            self.created.append(name)


@pytest.fixture
def kitaru(k8s: kubernetes.client.ApiClient, namespace: str) -> Kitaru:
    client = Kitaru(k8s, namespace)
    client.ship_flows()
    return client


def test_a_burst_survives_every_component_crashing(
    kitaru: Kitaru, namespace: str, tmp_path: Path
) -> None:
    operator = OperatorProcess(namespace, tmp_path, resync_seconds=5)
    operator.start()
    # Retries are part of the Job API: a run whose pod dies with its node is run again.
    kitaru.deploy("square", 1, "square", {"n": 0}, backoff_limit=3)
    kitaru.wait_default("square")

    def restart_operator() -> None:
        operator.kill()
        operator.start(wait=False)

    faults: list[tuple[str, Callable[[], None], Callable[[], bool]]] = [
        ("kube-apiserver", lambda: restart("kube-apiserver"), api_answers),
        ("etcd", lambda: restart("etcd"), api_answers),
        ("operator", restart_operator, operator.ready),
        ("kubelet", lambda: restart("kubelet"), node_ready),
        ("operator again", restart_operator, operator.ready),
        ("containerd", lambda: restart("containerd"), node_ready),
    ]
    burst = Burst(kitaru)
    burst.start()
    recovery: dict[str, float] = {}
    try:
        for index, (name, crash, recovered) in enumerate(faults):
            # Spread over the burst: fault k when k/(n+1) of the invocations are created.
            due = (index + 1) * BURST // (len(faults) + 1)
            wait_for(lambda d=due: len(burst.created) >= d, 120, message=f"{due} created")
            started = time.monotonic()
            crash()
            wait_for(recovered, timeout=120, interval=0.2, message=f"{name} back")
            recovery[name] = time.monotonic() - started
        burst.join(timeout=300)
        assert not burst.is_alive() and len(burst.created) == BURST, len(burst.created)

        def finished() -> dict[str, dict[str, Any]]:
            listed = json.loads(kubectl("get", "finv", "-o", "json", namespace=namespace).stdout)
            return {i["metadata"]["name"]: i for i in listed["items"]}

        done = wait_for(
            lambda: (
                (runs := finished())
                and len(runs) == BURST
                and all((r.get("status") or {}).get("phase") in FINISHED for r in runs.values())
                and runs
            ),
            timeout=900,
            interval=2,
            message=f"all {BURST} invocations finished",
        )
    finally:
        operator.kill()
    for name, seconds in recovery.items():
        print(f"recovery after {name}: {seconds:.1f} s")

    wrong = {
        name: run["status"]
        for name, run in done.items()
        if run["status"]["phase"] != "Completed"
        or run["status"].get("result") != int(name.split("-")[1]) ** 2
    }
    assert not wrong, wrong
    jobs = json.loads(kubectl("get", "jobs", "-o", "json", namespace=namespace).stdout)["items"]
    owners = {
        job["metadata"]["name"]: [o["uid"] for o in job["metadata"]["ownerReferences"]]
        for job in jobs
    }
    assert sorted(owners) == sorted(done), "exactly one Job per invocation, no other"
    for name, run in done.items():
        assert owners[name] == [run["metadata"]["uid"]], name
