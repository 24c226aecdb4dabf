"""Dispatch latency (FlowInvocation created -> its Job created) through the operator,
against a baseline that makes only the bare API calls the operator needs.

Run it on a throwaway cluster of its own, so that other work on the shared dev cluster
(tests, their namespaces being deleted) does not land in one case and not the other:

    python -m kitaru_localnode.cluster up --dir /tmp/benchcluster
    KUBECONFIG=/tmp/benchcluster/kubeconfig kubectl apply -f crds/
    KUBECONFIG=/tmp/benchcluster/kubeconfig python bench/bench_dispatch.py
    python -m kitaru_localnode.cluster down --dir /tmp/benchcluster

What makes the comparison fair:

- Both dispatchers are separate processes started the same way (`python -m
  kitaru_operator`, or this script with `--baseline-dispatcher`); the measuring process
  (creates invocations at a steady rate, watches Jobs) is identical for both.
- Latency is taken client-side, from just before the invocation's create call to its
  Job's ADDED event on a raw watch (the same watch lag on both sides). The measuring
  side is one asyncio/aiohttp loop rather than threads of the sync `kubernetes` client
  (pydantic call validation and model deserialisation per call): on a 2-core machine
  its CPU is taken from both dispatchers and the API server.
- Each case gets a fresh namespace whose ResourceQuota allows no pods, so Jobs are
  really created but never run (the figure is dispatch alone, not the node). The Job
  controller keeps retrying those pod creates with backoff (FailedCreate); that load is
  the same for both sides *within* a case, so every case waits until the previous
  case's namespace is fully deleted (its Jobs, their retries, the GC work) first.
- Rounds alternate the order (baseline first, then operator first, ...); the ratio is
  given per round and as the median over rounds. Each case reports the dispatcher
  process's CPU seconds.

A rate is "sustained" when every invocation's Job appeared and p99 < 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from benchlib import KUBECONFIG, G, V, api, pct, session, summary, wait_namespaces_gone
from kitaru.core.inputs import inputs_hash, merge_inputs
from kitaru.core.jobs import build_chain, build_job
from kitaru.core.manifests import build_deployment, build_invocation
from kitaru.core.models import FlowDeploymentSpec, FlowInvocationSpec, SelectorKind
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

PREFIX = "bench-"


def setup_namespace(k8s: client.ApiClient) -> str:
    ns = f"{PREFIX}{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(k8s)
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_resource_quota(
        ns, {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}
    )
    body = build_deployment(
        "square", 1, entrypoint="m:square", image="ghcr.io/kitaru-k8s/runner:dev"
    )
    client.CustomObjectsApi(k8s).create_namespaced_custom_object(G, V, ns, "flowdeployments", body)
    return ns


async def _measure(
    cfg: client.Configuration, ns: str, rate: float, seconds: float, timeout: float = 30
) -> tuple[dict[str, float], dict[str, float]]:
    """Create invocations at a steady rate and watch Jobs, on one light asyncio client
    (the measuring side must not eat the CPU the dispatchers and the API server need):
    (invocation name -> just before its create call, Job name -> its ADDED event)."""
    http = session(cfg, limit=32)
    started: dict[str, float] = {}
    seen: dict[str, float] = {}
    total = int(rate * seconds)

    async def watch_jobs() -> None:
        url = f"/apis/batch/v1/namespaces/{ns}/jobs"
        async with http.get(url, params={"watch": "1"}, timeout=aiohttp.ClientTimeout()) as r:
            async for line in r.content:
                if line.strip():
                    name = json.loads(line)["object"]["metadata"]["name"]
                    seen.setdefault(name, time.monotonic())

    async def create(name: str) -> None:
        body = build_invocation("square", name=name, version=1)
        started[name] = time.monotonic()
        url = f"/apis/{G}/{V}/namespaces/{ns}/flowinvocations"
        async with http.post(url, json=body) as response:
            await response.read()
            if response.status >= 300:
                print(f"create {name}: {response.status}", file=sys.stderr)

    async with http:
        watcher = asyncio.create_task(watch_jobs())
        await asyncio.sleep(0.5)
        creates = []
        origin = time.monotonic()
        for i in range(total):
            delay = origin + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            creates.append(asyncio.create_task(create(f"inv-{i}")))
        await asyncio.gather(*creates)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(n in seen for n in started):
            await asyncio.sleep(0.1)
        watcher.cancel()
    return started, seen


def latencies(started: dict[str, float], seen: dict[str, float]) -> list[float]:
    return sorted(seen[n] - t for n, t in started.items() if n in seen)


# --- the baseline dispatcher (its own process, like the operator) ------------------------


class Baseline:
    """The bare calls per invocation: read the deployment, create the Job, write the status."""

    def __init__(self, k8s: client.ApiClient, ns: str) -> None:
        self.custom, self.batch, self.ns = client.CustomObjectsApi(k8s), client.BatchV1Api(k8s), ns
        self.pool = ThreadPoolExecutor(32)
        self.w = watch.Watch()

    def run(self) -> None:
        stream = self.w.stream(
            self.custom.list_namespaced_custom_object,
            G,
            V,
            self.ns,
            "flowinvocations",
            timeout_seconds=0,
        )
        print("ready", flush=True)
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


# --- one case ---------------------------------------------------------------------------


@dataclass
class Case:
    dispatcher: str
    rate: float
    total: int
    lat: list[float]
    cpu: float  # CPU seconds of the dispatcher process

    def line(self) -> str:
        return (
            f"{self.dispatcher:8} @{self.rate:.0f}/s: n={len(self.lat)}/{self.total} "
            f"{summary(self.lat)} cpu={self.cpu:.1f}s"
        )

    @property
    def sustained(self) -> bool:
        return len(self.lat) == self.total and pct(self.lat, 0.99) < 2.0


def _start(dispatcher: str, ns: str) -> subprocess.Popen[bytes]:
    if dispatcher == "operator":
        command = ["-m", "kitaru_operator", "--namespace", ns, "--metrics-port", "0"]
    else:
        command = [str(Path(__file__).resolve()), "--baseline-dispatcher", ns]
    return subprocess.Popen(
        [sys.executable, *command],
        stdout=subprocess.PIPE if dispatcher == "baseline" else subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "KUBECONFIG": KUBECONFIG},
    )


def _wait_ready(k8s: client.ApiClient, dispatcher: str, ns: str, proc: Any) -> None:
    if dispatcher == "baseline":
        assert proc.stdout is not None
        proc.stdout.readline()  # "ready": its watch is open
        time.sleep(0.5)
        return
    custom = client.CustomObjectsApi(k8s)
    deadline = time.monotonic() + 30
    while (
        time.monotonic() < deadline
        and not custom.list_namespaced_custom_object(G, V, ns, "flowroutes")["items"]
    ):
        time.sleep(0.2)  # the operator is up once it bootstrapped the default route


def _stop(proc: subprocess.Popen[bytes]) -> float:
    """SIGKILL the dispatcher; its CPU seconds (user + system) from wait4."""
    proc.send_signal(signal.SIGKILL)
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = -9
    return usage.ru_utime + usage.ru_stime


def run_case(k8s: client.ApiClient, dispatcher: str, rate: float, seconds: float) -> Case:
    wait_namespaces_gone(k8s, PREFIX)
    ns = setup_namespace(k8s)
    proc = None
    cpu = float("nan")
    try:
        proc = _start(dispatcher, ns)
        _wait_ready(k8s, dispatcher, ns, proc)
        lat = latencies(*asyncio.run(_measure(k8s.configuration, ns, rate, seconds)))
    finally:
        if proc is not None:
            cpu = _stop(proc)
        with contextlib.suppress(ApiException):
            client.CoreV1Api(k8s).delete_namespace(ns, propagation_policy="Background")
    return Case(dispatcher, rate, int(rate * seconds), lat, cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10, help="length of each case")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds at 20/s")
    parser.add_argument("--rates", default="50,80,120", help="rates tried for the maximum")
    parser.add_argument("--baseline-dispatcher", metavar="NS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    k8s = api()
    if args.baseline_dispatcher:
        Baseline(k8s, args.baseline_dispatcher).run()
        return 0

    ratios = []
    p50s: dict[str, list[float]] = {"baseline": [], "operator": []}
    for round_ in range(args.rounds):
        order = ("baseline", "operator") if round_ % 2 == 0 else ("operator", "baseline")
        cases = {d: run_case(k8s, d, 20, args.seconds) for d in order}
        for d in order:
            print(f"round {round_ + 1} {cases[d].line()}", flush=True)
            p50s[d].append(pct(cases[d].lat, 0.5))
        ratio = pct(cases["operator"].lat, 0.5) / pct(cases["baseline"].lat, 0.5)
        ratios.append(ratio)
        print(f"round {round_ + 1} operator/baseline p50 ratio: {ratio:.2f}x", flush=True)
    if ratios:
        print(
            f"@20/s median p50 over {args.rounds} rounds: "
            f"baseline {statistics.median(p50s['baseline']) * 1000:.0f} ms, "
            f"operator {statistics.median(p50s['operator']) * 1000:.0f} ms; "
            f"median ratio {statistics.median(ratios):.2f}x (target <= 2x)",
            flush=True,
        )

    best = {"baseline": 0.0, "operator": 0.0}
    alive = {"baseline": True, "operator": True}
    for i, rate in enumerate(float(r) for r in args.rates.split(",")):
        order = ("baseline", "operator") if i % 2 == 0 else ("operator", "baseline")
        for dispatcher in order:
            if not alive[dispatcher]:
                continue
            case = run_case(k8s, dispatcher, rate, args.seconds)
            verdict = "sustained" if case.sustained else "NOT sustained"
            print(f"{case.line()} {verdict}", flush=True)
            if case.sustained:
                best[dispatcher] = rate
            else:
                alive[dispatcher] = False
    for dispatcher, rate in best.items():
        print(f"{dispatcher:8} highest sustained rate tried: {rate:.0f}/s (p99 < 2 s, none lost)")
    wait_namespaces_gone(k8s, PREFIX)
    return 0


if __name__ == "__main__":
    sys.exit(main())
