"""The operator's API layer measured against a maintained async client: the dispatch
call sequence through `kitaru_operator.kube.AsyncKube` (raw JSON over aiohttp) and
through `kubernetes_asyncio`, in one process, in alternating rounds.

`kubernetes_asyncio` is not a dependency of the project; install it for this bench:

    pip install kubernetes_asyncio
    python -m kitaru_localnode.cluster up --no-node --dir /tmp/benchcluster
    KUBECONFIG=/tmp/benchcluster/kubeconfig kubectl apply -f crds/
    KUBECONFIG=/tmp/benchcluster/kubeconfig python bench/bench_api_layer.py
    python -m kitaru_localnode.cluster down --dir /tmp/benchcluster

One sequence is the operator's dispatch of an invocation (`invocations._dispatch` and
the first pass of `_run_job`): create the Job (`build_job`'s manifest, `spec.managedBy`
naming the operator) and its first pod at the same time, adopt the pod (merge patch),
write the Job's status from `control_job` (merge patch of /status with the
resourceVersion). No node: the pods stay Pending. The manifests are built before the
clock starts and carry no owner reference (their owner would be a FlowInvocation; the
garbage collector would delete them mid-sequence), so both sides send the same bodies.

What makes the comparison fair:

- The same process, loop and call sequence for every side; each case has a fresh
  namespace, a fresh client (64 connections, as the operator's) and `--concurrency`
  untimed sequences that open its connections; then `--sequences` are timed.
- The previous case's namespace is gone before a case starts; rounds alternate the
  order of the sides (forward, then reversed, ...).
- CPU is this process's (`time.process_time`) over the timed sequences only: the API
  layer plus the same small pure work (adoption patch, Job status) on each side.

The sides:

- `asynckube`: the operator's client as it is.
- `k8s_asyncio`: `kubernetes_asyncio` as one uses it (typed API classes, responses
  deserialised into its models), turned back into dicts where the operator's core
  takes dicts (`sanitize_for_serialization`): what switching the layer would cost.
- `k8s_asyncio_raw`: `kubernetes_asyncio` with `_preload_content=False`, the JSON
  decoded here: its request path without the model layer.

Figures: p50/p99 of one sequence, sequences/s, CPU seconds per 1000 sequences: the
median over rounds, and the median of each round's ratio to `asynckube`. Each case's
line gives the 1-minute load average when it ended.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

try:
    import kubernetes_asyncio.client as ka_client
    import kubernetes_asyncio.config as ka_config
except ImportError:
    print(
        "bench_api_layer.py compares against kubernetes_asyncio, which is not a dependency "
        "of the project: pip install kubernetes_asyncio",
        file=sys.stderr,
    )
    sys.exit(2)

from benchlib import KUBECONFIG, api, pct, wait_namespaces_gone
from kitaru import kubeconfig
from kitaru.core.inputs import inputs_hash, merge_inputs
from kitaru.core.invocations import summarize_pod
from kitaru.core.job_control import adoption_patch, build_pod, control_job, pod_view
from kitaru.core.jobs import build_chain, build_job
from kitaru.core.manifests import build_deployment, build_invocation
from kitaru.core.models import FlowDeploymentSpec, FlowInvocationSpec, SelectorKind
from kitaru_operator.kube import JOB, POD, AsyncKube
from kubernetes import client
from kubernetes.client.rest import ApiException

PREFIX = "bench-api-"
MERGE_PATCH = "application/merge-patch+json"
SIDES = ("asynckube", "k8s_asyncio", "k8s_asyncio_raw")
Body = dict[str, Any]


def manifests(namespace: str, count: int) -> list[tuple[Body, Body]]:
    """(Job, its first pod) per sequence, as the operator builds them, owners removed."""
    deployment = FlowDeploymentSpec.model_validate(
        build_deployment("square", 1, entrypoint="m:square", image="kitaru.local/never-run:1")[
            "spec"
        ]
    )
    pairs = []
    for index in range(count):
        name = f"seq-{index}"
        spec = FlowInvocationSpec.model_validate(
            build_invocation("square", name=name, version=1)["spec"]
        )
        merged = merge_inputs(deployment.inputs, spec.inputs)
        chain = build_chain(SelectorKind.VERSION, None, deployment, inputs_hash(merged))
        uid = str(uuid.uuid4())
        job = build_job(name, uid, namespace, "square", chain, deployment, merged, spec)
        pod = build_pod(job, 0, owner={})  # no owner: see the module docstring
        job["metadata"].pop("ownerReferences", None)
        pod["metadata"].pop("ownerReferences", None)
        pairs.append((job, pod))
    return pairs


def status_patch(job: Body, pod: Body) -> Body:
    """The Job's first status write, as `_run_job` makes it (its pod is live)."""
    spec = job["spec"]
    control = control_job(
        spec.get("backoffLimit", 6),
        spec.get("activeDeadlineSeconds"),
        job.get("status") or {},
        [pod_view(summarize_pod(pod))],
        datetime.now(UTC),
    )
    assert control.status is not None and control.create_attempt is None
    return {
        "metadata": {"resourceVersion": job["metadata"]["resourceVersion"]},
        "status": control.status,
    }


# --- the sides: open a client, run one sequence, close ------------------------------------

Sequence = Callable[[Body, Body], Awaitable[None]]


async def asynckube(namespace: str) -> tuple[Sequence, Callable[[], Awaitable[None]]]:
    kube = AsyncKube(kubeconfig.load_configuration(KUBECONFIG), limit=64)

    async def sequence(job: Body, pod: Body) -> None:
        created, made = await asyncio.gather(
            kube.create(JOB, namespace, job), kube.create(POD, namespace, pod)
        )
        assert created is not None and made is not None
        pod_name, job_name = made["metadata"]["name"], created["metadata"]["name"]
        adopted = await kube.patch(POD, namespace, pod_name, adoption_patch(created))
        assert adopted is not None
        patch = status_patch(created, adopted)
        written = await kube.patch(JOB, namespace, job_name, patch, "status")
        assert written is not None

    return sequence, kube.close


async def _k8s_asyncio_client() -> Any:
    configuration = ka_client.Configuration()
    await ka_config.load_kube_config(config_file=KUBECONFIG, client_configuration=configuration)
    configuration.connection_pool_maxsize = 64
    return ka_client.ApiClient(configuration)


async def k8s_asyncio(namespace: str) -> tuple[Sequence, Callable[[], Awaitable[None]]]:
    http = await _k8s_asyncio_client()
    batch, core = ka_client.BatchV1Api(http), ka_client.CoreV1Api(http)
    as_dict = http.sanitize_for_serialization

    async def sequence(job: Body, pod: Body) -> None:
        job_model, pod_model = await asyncio.gather(
            batch.create_namespaced_job(namespace, job),
            core.create_namespaced_pod(namespace, pod),
        )
        created = as_dict(job_model)
        adopted = as_dict(
            await core.patch_namespaced_pod(
                pod_model.metadata.name,
                namespace,
                adoption_patch(created),
                _content_type=MERGE_PATCH,
            )
        )
        patch = status_patch(created, adopted)
        as_dict(
            await batch.patch_namespaced_job_status(
                job_model.metadata.name, namespace, patch, _content_type=MERGE_PATCH
            )
        )

    return sequence, http.close


async def k8s_asyncio_raw(namespace: str) -> tuple[Sequence, Callable[[], Awaitable[None]]]:
    http = await _k8s_asyncio_client()
    batch, core = ka_client.BatchV1Api(http), ka_client.CoreV1Api(http)

    async def decoded(call: Awaitable[Any]) -> Body:
        response = await call
        async with response:
            data = await response.read()
            if response.status >= 300:
                raise RuntimeError(f"{response.status} {data[:300]!r}")
        return dict(json.loads(data))

    async def sequence(job: Body, pod: Body) -> None:
        created, made = await asyncio.gather(
            decoded(batch.create_namespaced_job(namespace, job, _preload_content=False)),
            decoded(core.create_namespaced_pod(namespace, pod, _preload_content=False)),
        )
        adopted = await decoded(
            core.patch_namespaced_pod(
                made["metadata"]["name"],
                namespace,
                adoption_patch(created),
                _content_type=MERGE_PATCH,
                _preload_content=False,
            )
        )
        patch = status_patch(created, adopted)
        await decoded(
            batch.patch_namespaced_job_status(
                created["metadata"]["name"],
                namespace,
                patch,
                _content_type=MERGE_PATCH,
                _preload_content=False,
            )
        )

    return sequence, http.close


OPENERS = {"asynckube": asynckube, "k8s_asyncio": k8s_asyncio, "k8s_asyncio_raw": k8s_asyncio_raw}


# --- one case ------------------------------------------------------------------------------


@dataclass
class Case:
    side: str
    latencies: list[float]
    wall: float  # seconds for the timed sequences
    cpu: float  # CPU seconds of this process over them

    @property
    def p50(self) -> float:
        return pct(self.latencies, 0.5)

    @property
    def p99(self) -> float:
        return pct(self.latencies, 0.99)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall

    @property
    def cpu_per_1000(self) -> float:
        return self.cpu / len(self.latencies) * 1000

    def line(self) -> str:
        return (
            f"{self.side:16} p50={self.p50 * 1000:5.1f} ms p99={self.p99 * 1000:6.1f} ms "
            f"{self.rate:6.1f} seq/s cpu={self.cpu_per_1000:5.2f} s/1000"
        )


async def _run(sequence: Sequence, pairs: list[tuple[Body, Body]], concurrency: int) -> list[float]:
    """Every pair through `sequence`, `concurrency` at a time; each one's wall time."""
    latencies: list[float] = []
    pending = iter(pairs)

    async def worker() -> None:
        for job, pod in pending:
            started = time.perf_counter()
            await sequence(job, pod)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def _case(side: str, namespace: str, count: int, concurrency: int) -> Case:
    pairs = manifests(namespace, concurrency + count)
    sequence, close = await OPENERS[side](namespace)
    try:
        await _run(sequence, pairs[:concurrency], concurrency)  # opens the connections
        gc.collect()
        cpu, wall = time.process_time(), time.perf_counter()
        latencies = await _run(sequence, pairs[concurrency:], concurrency)
        return Case(side, latencies, time.perf_counter() - wall, time.process_time() - cpu)
    finally:
        await close()


def run_case(k8s: client.ApiClient, side: str, count: int, concurrency: int) -> Case:
    wait_namespaces_gone(k8s, PREFIX)
    namespace = f"{PREFIX}{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(k8s)
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        return asyncio.run(_case(side, namespace, count, concurrency))
    finally:
        with contextlib.suppress(ApiException):
            core.delete_namespace(namespace, propagation_policy="Background")


METRICS = {  # heading: (figure of a case, format)
    "p50 ms": (lambda c: c.p50 * 1000, ".1f"),
    "p99 ms": (lambda c: c.p99 * 1000, ".1f"),
    "sequences/s": (lambda c: c.rate, ".0f"),
    "CPU s per 1000": (lambda c: c.cpu_per_1000, ".2f"),
}


def report(cases: dict[str, list[Case]]) -> None:
    """A markdown table: per side and figure, the median over rounds and, in brackets,
    the median of each round's ratio to `asynckube` (the load of the shared machine
    changes between rounds, less within one)."""
    print("| side | " + " | ".join(METRICS) + " |")
    print("|---" * (len(METRICS) + 1) + "|")
    for side, runs in cases.items():
        cells = []
        for figure, form in METRICS.values():
            value = statistics.median(figure(c) for c in runs)
            ratio = statistics.median(
                figure(c) / figure(b) for c, b in zip(runs, cases["asynckube"], strict=True)
            )
            cells.append(f"{value:{form}} ({ratio:.2f}x)")
        print(f"| {side} | " + " | ".join(cells) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=500, help="timed sequences per case")
    parser.add_argument("--concurrency", type=int, default=8, help="sequences in flight")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--sides", default=",".join(SIDES), help="which sides, comma-separated")
    args = parser.parse_args()
    sides = [s for s in args.sides.split(",") if s]
    if "asynckube" not in sides or any(s not in OPENERS for s in sides):
        parser.error(f"--sides: asynckube (the baseline) and any of {', '.join(SIDES)}")
    k8s = api()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    cases: dict[str, list[Case]] = {side: [] for side in sides}
    for round_ in range(args.rounds):
        order = sides if round_ % 2 == 0 else sides[::-1]
        for side in order:
            case = run_case(k8s, side, args.sequences, args.concurrency)
            cases[side].append(case)
            load = os.getloadavg()[0]
            print(f"round {round_ + 1} {case.line()} load={load:.1f}", flush=True)
    wait_namespaces_gone(k8s, PREFIX)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"medians over {args.rounds} rounds, {args.sequences} sequences per case at "
        f"concurrency {args.concurrency}; in brackets the median ratio to asynckube "
        "of the same round:"
    )
    report(cases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
