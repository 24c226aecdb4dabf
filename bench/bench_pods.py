"""From submit to pod, and from submit to result: kitaru-k8s beside Argo Workflows
(defaults, and tuned to `--qps 500 --burst 1000`), all in one run, on the local cluster
with the controller-manager at its default flags (what users get).

Run it on the local cluster with its node (`make bench-pods` starts the cluster):

    python bench/bench_pods.py [--rates 5,20,50,100] [--result-rates 5,20] [--seconds 10]

- submit -> Pod created: the node is cordoned, so pods stay Pending and only their
  creation is timed. Objects (a FlowInvocation, or a one-container Workflow) are created
  at a steady rate for `--seconds`; the latency is from just before each create call to
  the ADDED event of its pod on a watch. A rate is sustained when every pod appears and
  p99 <= 1 s.
- submit -> result: the node runs the pods; the latency is from just before the create
  call to the watch event that shows the run finished (the invocation Completed, the
  Workflow Succeeded). Pods run a one-line Python program in the runner image.
- Argo Workflows v4.0.5 (a benchmark peer, never a dependency: it has reported security
  flaws): its workflow-controller is built from the Go module proxy into the cache on
  first use. Its executor, `argoexec`, does not build from the proxy (the module lacks
  a Linux file: "undefined: Setpgid"), so Argo's workflows cannot run here and Argo is
  measured up to its pods' creation only.

Every case gets a fresh namespace; the previous case's namespace is deleted first, so
one case's garbage collection does not load the next.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from benchlib import (
    KITARU,
    KUBECONFIG,
    api,
    configuration,
    pct,
    request,
    session,
    summary,
    wait_namespaces_gone,
)
from kitaru.core.jobs import source_key, source_sha256
from kitaru.core.manifests import build_deployment, build_invocation
from kitaru.core.models import SourceSnapshot

PREFIX = "podbench-"
POD, RESULT = "submit -> pod", "submit -> result"
WARMUP = 99999  # the index of the untimed first object of a case
ARGO_VERSION = "v4.0.5"
CACHE = Path(os.environ.get("KITARU_CACHE", Path.home() / ".cache" / "kitaru-k8s"))
ARGO_DIR = CACHE / f"argo-{ARGO_VERSION}"
NODE = "kitaru-local"
FLOW_SOURCE = "def square(n: int = 3) -> int:\n    return n * n\n"


def images() -> dict[str, Any]:
    images_file = Path(KUBECONFIG).parent / "images.json"
    return dict(json.loads(images_file.read_text()))


def kubectl(*args: str, input: str | None = None) -> str:
    bin_dir = Path(KUBECONFIG).parent / "env"
    exe = "kubectl"
    for line in bin_dir.read_text().splitlines():
        if line.startswith("export KITARU_BIN_DIR="):
            exe = str(Path(line.split("=", 1)[1]) / "kubectl")
    return subprocess.run(
        [exe, *args],
        input=input,
        text=True,
        check=True,
        capture_output=True,
        env={**os.environ, "KUBECONFIG": KUBECONFIG},
    ).stdout


# --- the systems under test --------------------------------------------------------


@dataclass
class System:
    name: str
    pod_label: str  # a label every pod of this system carries
    start: Callable[[str], subprocess.Popen[bytes]]
    setup: Callable[[aiohttp.ClientSession, str], Awaitable[None]]
    submit: Callable[[str, int], tuple[str, dict[str, Any]]]  # (collection path, body)
    collection: Callable[[str], str]  # where the submitted objects are watched
    finished: Callable[[dict[str, Any]], bool]


async def kitaru_setup(http: aiohttp.ClientSession, ns: str) -> None:
    files = {"square.py": FLOW_SOURCE.encode()}
    await request(
        http,
        "POST",
        f"/api/v1/namespaces/{ns}/configmaps",
        {
            "metadata": {"name": "square-src"},
            "immutable": True,
            "data": {source_key(p): d.decode() for p, d in files.items()},
        },
    )
    source = SourceSnapshot(
        config_map="square-src", sha256=source_sha256(files), files=["square.py"]
    )
    await request(
        http,
        "POST",
        f"{KITARU}/namespaces/{ns}/flowdeployments",
        build_deployment(
            "square",
            1,
            entrypoint="square:square",
            image=images()["runner"]["pinned"],
            source=source,
        ),
    )


def kitaru_start(ns: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "kitaru_operator", "--namespace", ns, "--metrics-port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "KUBECONFIG": KUBECONFIG},
    )


def kitaru_submit(ns: str, index: int) -> tuple[str, dict[str, Any]]:
    body = build_invocation("square", name=f"sq-{index:05d}", version=1, inputs={"n": index})
    return f"{KITARU}/namespaces/{ns}/flowinvocations", body


KITARU_SYSTEM = System(
    name="kitaru-k8s",
    pod_label="kitaru.dev/invocation",
    start=kitaru_start,
    setup=kitaru_setup,
    submit=kitaru_submit,
    collection=lambda ns: f"{KITARU}/namespaces/{ns}/flowinvocations",
    finished=lambda obj: (obj.get("status") or {}).get("phase") in ("Completed", "Failed"),
)


def build_argo() -> Path:
    """workflow-controller from the Go module proxy, once."""
    bin_dir = ARGO_DIR / "bin"
    if not (bin_dir / "workflow-controller").exists():
        print(f"building Argo Workflows {ARGO_VERSION} workflow-controller (once)...", flush=True)
        subprocess.run(
            [
                "go",
                "install",
                f"github.com/argoproj/argo-workflows/v4/cmd/workflow-controller@{ARGO_VERSION}",
            ],
            env={**os.environ, "GOBIN": str(bin_dir)},
            check=True,
        )
    return bin_dir


def argo_crds_dir() -> Path:
    module = subprocess.run(
        [
            "go",
            "mod",
            "download",
            "-json",
            f"github.com/argoproj/argo-workflows/v4@{ARGO_VERSION}",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(json.loads(module.stdout)["Dir"]) / "manifests" / "base" / "crds" / "minimal"


def argo_start(tuned: bool) -> Callable[[str], subprocess.Popen[bytes]]:
    def start(ns: str) -> subprocess.Popen[bytes]:
        flags = ["--qps", "500", "--burst", "1000"] if tuned else []
        return subprocess.Popen(
            [
                str(ARGO_DIR / "bin" / "workflow-controller"),
                "--kubeconfig",
                KUBECONFIG,
                "--namespaced",
                "--managed-namespace",
                ns,
                "--namespace",
                ns,
                "--executor-image",
                ARGOEXEC_IMAGE,  # never pulled: its pods only need to exist
                *flags,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "LEADER_ELECTION_DISABLE": "true"},
        )

    return start


ARGOEXEC_IMAGE = f"quay.io/argoproj/argoexec:{ARGO_VERSION}"
# Argo's executor does not build from the module proxy (v4.0.5's
# workflow/executor/osspecific has no signal_linux.go: "undefined: Setpgid"), so its
# workflows cannot run here: Argo is measured up to its pods' creation.
ARGO_RESULTS = False


async def argo_setup(http: aiohttp.ClientSession, ns: str) -> None:
    await request(
        http,
        "POST",
        f"/api/v1/namespaces/{ns}/configmaps",
        {"metadata": {"name": "workflow-controller-configmap"}, "data": {}},
    )


def argo_submit(ns: str, index: int) -> tuple[str, dict[str, Any]]:
    body = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": f"sq-{index:05d}"},
        "spec": {
            "entrypoint": "main",
            "templates": [
                {
                    "name": "main",
                    "container": {
                        "image": images()["runner"]["pinned"],
                        "command": ["python", "-c", f"print({index} * {index})"],
                    },
                }
            ],
        },
    }
    return f"/apis/argoproj.io/v1alpha1/namespaces/{ns}/workflows", body


def argo_system(tuned: bool) -> System:
    return System(
        name="argo (qps 500, burst 1000)" if tuned else "argo (defaults)",
        pod_label="workflows.argoproj.io/workflow",
        start=argo_start(tuned),
        setup=argo_setup,
        submit=argo_submit,
        collection=lambda ns: f"/apis/argoproj.io/v1alpha1/namespaces/{ns}/workflows",
        finished=lambda obj: (
            (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Error")
        ),
    )


# --- one case ------------------------------------------------------------------------


@dataclass
class Case:
    system: str
    what: str
    rate: float
    total: int
    latencies: list[float] = field(default_factory=list)

    @property
    def sustained(self) -> bool:
        return len(self.latencies) == self.total and pct(self.latencies, 0.99) <= 1.0

    def row(self) -> str:
        verdict = "sustained" if self.sustained else "NOT sustained"
        return (
            f"| {self.system} | {self.what} | {self.rate:g}/s | {len(self.latencies)}/{self.total}"
            f" | {summary(self.latencies)} | {verdict} |"
        )


async def _watch(
    http: aiohttp.ClientSession,
    path: str,
    params: dict[str, str],
    seen: dict[str, float],
    accept: Callable[[dict[str, Any]], str | None],
) -> None:
    """Record, per key `accept` gives, the first time an event qualifies."""
    async with http.get(
        path, params={"watch": "1", **params}, timeout=aiohttp.ClientTimeout()
    ) as response:
        async for line in response.content:
            if line.strip():
                event = json.loads(line)
                key = accept(event)
                if key is not None:
                    seen.setdefault(key, time.monotonic())


async def run_case(system: System, what: str, rate: float, seconds: float) -> Case:
    ns = f"{PREFIX}{uuid.uuid4().hex[:6]}"
    total = int(rate * seconds)
    case = Case(system.name, what, rate, total)
    async with session(configuration(), limit=64) as http:
        await request(http, "POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
        await system.setup(http, ns)
        controller = system.start(ns)
        started: dict[str, float] = {}
        seen: dict[str, float] = {}
        try:
            if what == POD:
                watcher = _watch(
                    http,
                    f"/api/v1/namespaces/{ns}/pods",
                    {"labelSelector": system.pod_label},
                    seen,
                    lambda e: (
                        e["object"]["metadata"]["labels"].get(system.pod_label)
                        if e["type"] == "ADDED"
                        else None
                    ),
                )
            else:
                watcher = _watch(
                    http,
                    system.collection(ns),
                    {},
                    seen,
                    lambda e: (
                        e["object"]["metadata"]["name"] if system.finished(e["object"]) else None
                    ),
                )
            task = asyncio.create_task(watcher)

            async def create(index: int) -> str:
                path, body = system.submit(ns, index)
                name = body["metadata"]["name"]
                started[name] = time.monotonic()
                await request(http, "POST", path, body)
                return name

            # A warm-up object, waited for: the controller is up and watching. Not timed.
            warmup = await create(WARMUP)
            while warmup not in seen:
                await asyncio.sleep(0.05)
            del started[warmup]
            origin = time.monotonic()
            creates = []
            for index in range(total):
                await asyncio.sleep(max(0.0, origin + index / rate - time.monotonic()))
                creates.append(asyncio.create_task(create(index)))
            await asyncio.gather(*creates)
            deadline = time.monotonic() + (30 if what == POD else 180)
            while time.monotonic() < deadline and not all(n in seen for n in started):
                await asyncio.sleep(0.1)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            controller.send_signal(signal.SIGKILL)
            controller.wait()
            with contextlib.suppress(RuntimeError):
                await request(http, "DELETE", f"/api/v1/namespaces/{ns}")
    case.latencies = [seen[n] - t for n, t in started.items() if n in seen]
    return case


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="5,20,50,100", help="submit -> pod rates")
    parser.add_argument("--result-rates", default="5,20", help="submit -> result rates")
    parser.add_argument("--seconds", type=float, default=10, help="length of each case")
    parser.add_argument("--systems", default="kitaru,argo,argo-tuned")
    args = parser.parse_args()
    available = {
        "kitaru": KITARU_SYSTEM,
        "argo": argo_system(tuned=False),
        "argo-tuned": argo_system(tuned=True),
    }
    systems = [available[name] for name in args.systems.split(",")]
    if any(s.pod_label.startswith("workflows") for s in systems):
        build_argo()
        for crd in sorted(argo_crds_dir().glob("argoproj.io_*.yaml")):  # not the kustomization
            kubectl("apply", "--server-side", "-f", str(crd))
    k8s = api()
    cases = []
    kubectl("cordon", NODE)
    try:
        for rate in (float(r) for r in args.rates.split(",") if r):
            for system in systems:
                wait_namespaces_gone(k8s, PREFIX)
                cases.append(asyncio.run(run_case(system, POD, rate, args.seconds)))
                print(cases[-1].row(), flush=True)
    finally:
        kubectl("uncordon", NODE)
    for rate in (float(r) for r in args.result_rates.split(",") if r):
        for system in systems:
            if system.pod_label.startswith("workflows") and not ARGO_RESULTS:
                continue
            wait_namespaces_gone(k8s, PREFIX)
            cases.append(asyncio.run(run_case(system, RESULT, rate, args.seconds)))
            print(cases[-1].row(), flush=True)
    wait_namespaces_gone(k8s, PREFIX)
    print("\n| system | what | rate | seen | latency | verdict |\n|---|---|---|---|---|---|")
    for case in cases:
        print(case.row())
    return 0


if __name__ == "__main__":
    sys.exit(main())
