"""Latency of the node: pod start at a steady rate (against the Kubernetes SLO) and
invoke -> result through the operator, each beside a baseline measured in the same run.

Run it on the local cluster (it needs the node; `make bench-node` starts the cluster):

    python bench/bench_node.py [--pods 100 --rate 5] [--invocations 30]

- Pod start: pods of the runner image (`sleep`) are created at `--rate` per second; a
  pod's start latency is taken client-side, from just before its create call to the
  watch event that shows it Running with its container started (the SLO's definition:
  creation to all containers started and observed; no image pull, the images are on the
  node). The SLO: p99 <= 5 s at up to 5 pods/s (sig-scalability). Baseline: the same
  create -> watch round trip for a ConfigMap (the API server and watch alone).
- invoke -> result: the operator (`python -m kitaru_operator` for a fresh namespace)
  resolves each FlowInvocation of a stdlib-only flow shipped as a source ConfigMap and
  runs it as a Job in a container of the runner image; the latency is from just before
  the create call to the watch event that carries the result. Invocations run one after
  the other. Baseline: a bare pod of the same image running the same flow through the
  runner (`python -m kitaru.runner`), create -> its container's exit 0 observed, i.e.
  the node's part of a run without the operator and the Job controller.

  The kubelet notices container starts and exits by relisting the runtime once a second
  (its generic PLEG; the evented one needs containerd >= 1.7). Runs started right after
  the previous one was observed all start at the same point of that tick and measure the
  same whole number of ticks; real invocations arrive at any time. So each run starts
  after a random pause of 0-1 s (seeded), and the figure is what an invocation at an
  arbitrary moment sees. `--back-to-back` drops the pause (the phase-locked figure).

`--image` names the runner image (default: the pinned one from `.cluster/images.json`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kitaru.core.jobs import SOURCE_MOUNT_PATH, source_key, source_sha256
from kitaru.core.manifests import build_deployment, build_invocation
from kitaru.core.models import SourceSnapshot
from kubernetes import client, config, watch

REPO = Path(__file__).resolve().parents[1]
KUBECONFIG = os.environ.get("KUBECONFIG", str(REPO / ".cluster" / "kubeconfig"))
G, V = "kitaru.dev", "v1alpha1"
SLO_P99_SECONDS = 5.0
FLOW_SOURCE = b'def hello(name: str = "world") -> str:\n    return f"hello {name}"\n'
FLOW_FILES = {"hello.py": FLOW_SOURCE}
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def api() -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(config_file=KUBECONFIG, client_configuration=configuration)
    configuration.connection_pool_maxsize = 32
    return client.ApiClient(configuration)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(name: str, seconds: list[float]) -> dict[str, Any]:
    return {
        "case": name,
        "n": len(seconds),
        "p50_s": round(percentile(seconds, 50), 3),
        "p99_s": round(percentile(seconds, 99), 3),
        "max_s": round(max(seconds), 3),
        "mean_s": round(statistics.fmean(seconds), 3),
    }


class Observer:
    """A watch in a thread: records, per object name, when `done(obj)` first held."""

    def __init__(self, list_fn: Callable[..., Any], done: Callable[[dict], bool], **kw: Any):
        self.seen: dict[str, float] = {}
        self.cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, args=(list_fn, done, kw), daemon=True)
        self._thread.start()
        time.sleep(0.5)  # the watch is established before the first create

    def _run(self, list_fn: Callable[..., Any], done: Callable[[dict], bool], kw: Any) -> None:
        stream = watch.Watch()
        for event in stream.stream(list_fn, _request_timeout=600, **kw):
            obj = event["raw_object"]
            name = obj["metadata"]["name"]
            if name not in self.seen and done(obj):
                with self.cond:
                    self.seen[name] = time.monotonic()
                    self.cond.notify_all()
            if self._stop:
                stream.stop()

    def wait(self, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not all(n in self.seen for n in names):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [n for n in names if n not in self.seen]
                    raise TimeoutError(f"{len(missing)} not done: {missing[:5]}")
                self.cond.wait(left)

    def stop(self) -> None:
        self._stop = True


def pod_running(pod: dict) -> bool:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all("running" in (s.get("state") or {}) for s in statuses)


def run_succeeded(pod: dict) -> bool:
    """The container terminated with exit code 0: what the operator takes as a run's end
    (the pod's phase follows a kubelet relist later)."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return any((s.get("state") or {}).get("terminated", {}).get("exitCode") == 0 for s in statuses)


def runner_pod(name: str, image: str, command: list[str], env: list[dict] | None = None) -> dict:
    return {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "command": command,
                    "env": env or [],
                    "securityContext": RESTRICTED,
                    "volumeMounts": [
                        {"name": "source", "mountPath": SOURCE_MOUNT_PATH, "readOnly": True}
                    ],
                }
            ],
            "volumes": [{"name": "source", "configMap": {"name": "hello-source"}}],
        },
    }


def paced(count: int, rate: float, create: Callable[[int], str]) -> dict[str, float]:
    """Call create(i) at `rate` per second; name -> monotonic time just before the call."""
    started: dict[str, float] = {}
    origin = time.monotonic()
    for i in range(count):
        delay = origin + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        before = time.monotonic()
        started[create(i)] = before
    return started


def latencies(started: dict[str, float], seen: dict[str, float]) -> list[float]:
    return [seen[n] - t for n, t in started.items()]


def bench_pod_start(k8s: client.ApiClient, ns: str, image: str, pods: int, rate: float) -> list:
    core = client.CoreV1Api(k8s)
    results = []

    configmaps = Observer(core.list_namespaced_config_map, lambda o: True, namespace=ns)

    def make_configmap(i: int) -> str:
        name = f"baseline-{i}"
        core.create_namespaced_config_map(ns, {"metadata": {"name": name}, "data": {"i": str(i)}})
        return name

    started = paced(pods, rate, make_configmap)
    configmaps.wait(list(started), timeout=60)
    configmaps.stop()
    results.append(
        summary(
            f"baseline: ConfigMap create -> watched, {rate}/s", latencies(started, configmaps.seen)
        )
    )

    observer = Observer(core.list_namespaced_pod, pod_running, namespace=ns)

    def make_pod(i: int) -> str:
        name = f"start-{i}"
        core.create_namespaced_pod(ns, runner_pod(name, image, ["sleep", "3600"]))
        return name

    started = paced(pods, rate, make_pod)
    observer.wait(list(started), timeout=300)
    observer.stop()
    pod_start = latencies(started, observer.seen)
    row = summary(f"pod start (create -> running watched), {rate} pods/s", pod_start)
    row["p99_vs_slo_5s"] = round(row["p99_s"] / SLO_P99_SECONDS, 3)
    results.append(row)
    core.delete_collection_namespaced_pod(ns, grace_period_seconds=0)
    return results


def hello_deployment(image: str) -> dict:
    return build_deployment(
        "hello",
        1,
        entrypoint="hello:hello",
        image=image,
        source=SourceSnapshot(
            config_map="hello-source",
            sha256=source_sha256(FLOW_FILES),
            files=sorted(FLOW_FILES),
        ),
        inputs={"name": "world"},
        input_schema={
            "type": "object",
            "properties": {"name": {"type": "string", "default": "world"}},
        },
    )


def has_result(inv: dict) -> bool:
    status = inv.get("status") or {}
    return status.get("phase") in ("Completed", "Failed", "Cancelled")


def bench_invoke(
    k8s: client.ApiClient, ns: str, image: str, count: int, pause: Callable[[], None]
) -> list:
    core = client.CoreV1Api(k8s)
    custom = client.CustomObjectsApi(k8s)
    runner_env = [
        {"name": "KITARU_FLOW", "value": "hello"},
        {"name": "KITARU_ENTRYPOINT", "value": "hello:hello"},
        {"name": "KITARU_INPUTS", "value": '{"name": "bench"}'},
        {"name": "KITARU_SOURCE_DIR", "value": SOURCE_MOUNT_PATH},
        {"name": "KITARU_SOURCE_SHA256", "value": source_sha256(FLOW_FILES)},
        {"name": "KITARU_SOURCE_FILES", "value": json.dumps(sorted(FLOW_FILES))},
    ]
    results = []

    pods = Observer(core.list_namespaced_pod, run_succeeded, namespace=ns)
    baseline: list[float] = []
    for i in range(count):
        name = f"bare-run-{i}"
        pause()
        before = time.monotonic()
        core.create_namespaced_pod(
            ns, runner_pod(name, image, ["python", "-m", "kitaru.runner"], runner_env)
        )
        pods.wait([name], timeout=120)
        baseline.append(pods.seen[name] - before)
    pods.stop()
    results.append(summary("baseline: bare runner pod, create -> exit 0 watched", baseline))

    operator = subprocess.Popen(
        [sys.executable, "-m", "kitaru_operator", "--namespace", ns, "--metrics-port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "KUBECONFIG": KUBECONFIG},
    )
    try:
        custom.create_namespaced_custom_object(G, V, ns, "flowdeployments", hello_deployment(image))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the operator bootstraps `default`
            routes = custom.list_namespaced_custom_object(G, V, ns, "flowroutes")["items"]
            if routes:
                break
            time.sleep(0.2)
        invocations = Observer(
            lambda **kw: custom.list_namespaced_custom_object(G, V, ns, "flowinvocations", **kw),
            has_result,
        )
        seconds: list[float] = []
        failed = 0
        for i in range(count):
            name = f"inv-{i}"
            body = build_invocation("hello", name=name, inputs={"name": "bench"})
            pause()
            before = time.monotonic()
            custom.create_namespaced_custom_object(G, V, ns, "flowinvocations", body)
            invocations.wait([name], timeout=120)
            seconds.append(invocations.seen[name] - before)
            got = custom.get_namespaced_custom_object(G, V, ns, "flowinvocations", name)
            failed += got["status"].get("result") != "hello bench"
        invocations.stop()
    finally:
        operator.terminate()
        operator.wait(timeout=30)
    row = summary("invoke -> result (operator, Job, runner container)", seconds)
    row["wrong_results"] = failed
    row["p50_vs_baseline"] = round(row["p50_s"] / results[0]["p50_s"], 3)
    results.append(row)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--invocations", type=int, default=30)
    parser.add_argument("--image", help="runner image (default: the node's, pinned)")
    parser.add_argument("--skip-pod-start", action="store_true")
    parser.add_argument("--back-to-back", action="store_true", help="no random pause per run")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    jitter = random.Random(args.seed)

    def pause() -> None:
        if not args.back_to_back:
            time.sleep(jitter.uniform(0, 1))

    image = (
        args.image
        or json.loads((REPO / ".cluster" / "images.json").read_text())["runner"]["pinned"]
    )
    k8s = api()
    core = client.CoreV1Api(k8s)
    ns = f"bench-node-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    try:
        deadline = time.monotonic() + 30
        while not core.list_namespaced_service_account(ns).items and time.monotonic() < deadline:
            time.sleep(0.1)
        core.create_namespaced_config_map(
            ns,
            {
                "metadata": {"name": "hello-source"},
                "immutable": True,
                "data": {source_key(p): d.decode() for p, d in FLOW_FILES.items()},
            },
        )
        rows = [] if args.skip_pod_start else bench_pod_start(k8s, ns, image, args.pods, args.rate)
        rows += bench_invoke(k8s, ns, image, args.invocations, pause)
    finally:
        core.delete_namespace(ns)
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
