"""Dispatch latency (FlowInvocation created -> its Job created) through the operator,
against a baseline that makes only the bare API calls the operator needs.

Needs the local cluster (`make cluster-up`) with crds/ applied. Each measurement
runs in a fresh namespace whose ResourceQuota allows no pods, so Jobs are created but
never run: the figure is dispatch alone. Latency is taken client-side: from just
before the create call to the Job's ADDED event on a watch (the same watch lag on
both sides).

    python bench/bench_dispatch.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kitaru.core.inputs import inputs_hash, merge_inputs
from kitaru.core.jobs import build_chain, build_job
from kitaru.core.models import FlowDeploymentSpec, FlowInvocationSpec, SelectorKind
from kubernetes import client, config, watch

REPO = Path(__file__).resolve().parents[1]
KUBECONFIG = os.environ.get("KUBECONFIG", str(REPO / ".cluster" / "kubeconfig"))
G, V = "kitaru.dev", "v1alpha1"


def api() -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(config_file=KUBECONFIG, client_configuration=configuration)
    configuration.connection_pool_maxsize = 64
    return client.ApiClient(configuration)


def setup_namespace(k8s: client.ApiClient) -> str:
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(k8s)
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_resource_quota(
        ns, {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}
    )
    body = {
        "apiVersion": f"{G}/{V}",
        "kind": "FlowDeployment",
        "metadata": {"name": "square-v1"},
        "spec": {
            "flow": "square",
            "version": 1,
            "snapshot": {"image": "ghcr.io/kitaru-k8s/runner:dev", "entrypoint": "m:square"},
        },
    }
    client.CustomObjectsApi(k8s).create_namespaced_custom_object(G, V, ns, "flowdeployments", body)
    return ns


class JobWatch:
    """Records when each Job of the namespace is first seen."""

    def __init__(self, k8s: client.ApiClient, ns: str) -> None:
        self.seen: dict[str, float] = {}
        self.batch, self.ns = client.BatchV1Api(k8s), ns
        self.stop = watch.Watch()
        threading.Thread(target=self.run, daemon=True).start()
        time.sleep(0.5)

    def run(self) -> None:
        for event in self.stop.stream(self.batch.list_namespaced_job, self.ns, timeout_seconds=0):
            self.seen.setdefault(event["object"].metadata.name, time.monotonic())


def create_at_rate(
    k8s: client.ApiClient, ns: str, rate: float, seconds: float, prefix: str
) -> dict[str, float]:
    custom = client.CustomObjectsApi(k8s)
    started: dict[str, float] = {}
    total = int(rate * seconds)
    origin = time.monotonic()

    def create(i: int) -> None:
        name = f"{prefix}-{i}"
        body = {
            "apiVersion": f"{G}/{V}",
            "kind": "FlowInvocation",
            "metadata": {"name": name},
            "spec": {"flow": "square", "version": 1, "inputs": {}},
        }
        started[name] = time.monotonic()
        custom.create_namespaced_custom_object(
            G, V, ns, "flowinvocations", body, _preload_content=False
        )

    with ThreadPoolExecutor(16) as pool:
        for i in range(total):
            delay = origin + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(create, i)
    return started


def latencies(
    started: dict[str, float], seen: dict[str, float], timeout: float = 30
) -> list[float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(n in seen for n in started):
        time.sleep(0.1)
    return sorted(seen[n] - t for n, t in started.items() if n in seen)


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


def summary(values: list[float]) -> str:
    return f"p50={pct(values, 0.5) * 1000:.0f} ms p99={pct(values, 0.99) * 1000:.0f} ms"


class Baseline:
    """The bare calls per invocation: read the deployment, create the Job, write the status."""

    def __init__(self, k8s: client.ApiClient, ns: str) -> None:
        self.custom, self.batch, self.ns = client.CustomObjectsApi(k8s), client.BatchV1Api(k8s), ns
        self.pool = ThreadPoolExecutor(32)
        self.w = watch.Watch()
        threading.Thread(target=self.run, daemon=True).start()
        time.sleep(0.5)

    def run(self) -> None:
        stream = self.w.stream(
            self.custom.list_namespaced_custom_object,
            G,
            V,
            self.ns,
            "flowinvocations",
            timeout_seconds=0,
        )
        for event in stream:
            if event["type"] == "ADDED":
                self.pool.submit(self.dispatch, event["object"])

    def dispatch(self, inv: dict[str, Any]) -> None:
        spec = FlowInvocationSpec.model_validate(inv["spec"])
        raw = json.loads(
            self.custom.get_namespaced_custom_object(
                G, V, self.ns, "flowdeployments", "square-v1", _preload_content=False
            ).data
        )
        dep = FlowDeploymentSpec.model_validate(raw["spec"])
        merged = merge_inputs(dep.inputs, spec.inputs)
        chain = build_chain(SelectorKind.VERSION, None, dep, inputs_hash(merged))
        job = build_job(
            inv["metadata"]["name"],
            inv["metadata"]["uid"],
            self.ns,
            "square",
            chain,
            dep,
            merged,
            spec,
        )
        self.batch.create_namespaced_job(self.ns, job, _preload_content=False)
        inv["status"] = {
            "phase": "Pending",
            "jobName": job["metadata"]["name"],
            "resolved": chain.wire(),
        }
        self.custom.replace_namespaced_custom_object_status(
            G, V, self.ns, "flowinvocations", inv["metadata"]["name"], inv, _preload_content=False
        )


def run_case(k8s: client.ApiClient, dispatcher: str, rate: float, seconds: float) -> list[float]:
    ns = setup_namespace(k8s)
    proc = None
    try:
        jobs = JobWatch(k8s, ns)
        if dispatcher == "operator":
            proc = subprocess.Popen(
                [sys.executable, "-m", "kitaru_operator", "--namespace", ns, "--metrics-port", "0"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "KUBECONFIG": KUBECONFIG},
            )
            custom = client.CustomObjectsApi(k8s)
            deadline = time.monotonic() + 30
            while (
                time.monotonic() < deadline
                and not custom.list_namespaced_custom_object(G, V, ns, "flowroutes")["items"]
            ):
                time.sleep(0.2)  # the operator is up once it bootstrapped the default route
        else:
            Baseline(k8s, ns)
        started = create_at_rate(k8s, ns, rate, seconds, "inv")
        return latencies(started, jobs.seen)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        client.CoreV1Api(k8s).delete_namespace(ns, propagation_policy="Background")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument(
        "--rates", default="50,80,120", help="rates tried for the sustained maximum"
    )
    args = parser.parse_args()
    k8s = api()
    results = {}
    for dispatcher in ("baseline", "operator"):
        lat = run_case(k8s, dispatcher, 20, args.seconds)
        results[dispatcher] = lat
        print(f"{dispatcher:8} @20/s: n={len(lat)} {summary(lat)}")
    ratio = pct(results["operator"], 0.5) / pct(results["baseline"], 0.5)
    print(f"operator/baseline p50 ratio at 20/s: {ratio:.2f}x (target <= 2x)")
    for dispatcher in ("baseline", "operator"):
        best = 0.0
        for rate in [float(r) for r in args.rates.split(",")]:
            lat = run_case(k8s, dispatcher, rate, args.seconds)
            total = int(rate * args.seconds)
            sustained = len(lat) == total and pct(lat, 0.99) < 2.0
            verdict = "sustained" if sustained else "NOT sustained"
            print(f"{dispatcher:8} @{rate:.0f}/s: n={len(lat)}/{total} {summary(lat)} {verdict}")
            if not sustained:
                break
            best = rate
        print(f"{dispatcher:8} highest sustained rate tried: {best:.0f}/s (p99 < 2 s, none lost)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
