"""The operator at scale: time to ready, memory, idle CPU and dispatch latency with
many versions and finished runs, each as a ratio to the (10, 10) case of the same run.

Run it on a throwaway cluster of its own (`make bench` does):

    python -m kitaru_localnode.cluster up --dir /tmp/benchcluster
    KUBECONFIG=/tmp/benchcluster/kubeconfig kubectl apply -f crds/
    KUBECONFIG=/tmp/benchcluster/kubeconfig python bench/bench_scale.py
    python -m kitaru_localnode.cluster down --dir /tmp/benchcluster

Each case fills its namespace(s) while no operator runs: N FlowDeployments of one flow
(v1..vN, no status, no routes) and M finished FlowInvocations (phase Completed, with a
result). Then `python -m kitaru_operator` starts — with its default retention TTL (a
week: every run is tracked) and `--history-limit none` (nothing is deleted, so the case
measures a namespace that really holds M runs) — and we measure:

- ready: start -> every version's status current (v1 tagged `default`, the others
  untagged) and the `default` route Ready; observed by a watch, not by polling lists;
- runs listed: start -> retention has listed every finished run (its log line);
- RSS of the operator at ready and after the idle window, and its peak (VmHWM);
- idle CPU: the operator's CPU seconds over the idle window (after both of the above),
  as % of one core;
- dispatch: 20 invocations of `default` at 2/s, from just before the create call to the
  Job's ADDED event on a watch (a ResourceQuota of 0 pods keeps Jobs from running).

The `-A` case spreads 100 namespaces x (10 versions, 1 000 finished runs) and runs the
operator with `--all-namespaces`.

`--promotion` adds to each namespace, before its finished runs, a tag `canary` on v1 and
a FlowPromotion canary -> stable that waits for more runs than there are: the operator
counts every finished run of v1 (one in `versions`), and "counted" is start -> the
promotion's status showing them all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from benchlib import (
    KITARU,
    KUBECONFIG,
    REPO,
    G,
    V,
    api,
    configuration,
    pct,
    request,
    session,
    summary,
    wait_namespaces_gone,
)
from kitaru.core.manifests import build_deployment, build_invocation

PREFIX = "scale-"
PROMOTION = "agent.stable-bench"
FLOW = "agent"
IMAGE = "ghcr.io/kitaru-k8s/runner:dev"
CONCURRENCY = 48
DISPATCHES, DISPATCH_RATE = 20, 2.0


@dataclass(frozen=True)
class Shape:
    label: str
    versions: int
    finished: int
    namespaces: int = 1

    @property
    def all_namespaces(self) -> bool:
        return self.namespaces > 1


SHAPES = {
    "10x10": Shape("(10, 10)", 10, 10),
    "1kx1k": Shape("(1 000, 1 000)", 1000, 1000),
    "10kx10k": Shape("(10 000, 10 000)", 10000, 10000),
    "10x100k": Shape("(10, 100 000)", 10, 100000),
    "A100x1k": Shape("-A 100 ns x (10, 1 000)", 10, 1000, namespaces=100),
}


# --- filling a namespace -------------------------------------------------------------


def deployment(version: int) -> dict[str, Any]:
    return build_deployment(
        FLOW,
        version,
        entrypoint="flows.agent:agent",
        image=IMAGE,
        inputs={"topic": "durable agents"},
        input_schema={
            "type": "object",
            "properties": {"topic": {"type": "string", "default": "durable agents"}},
            "additionalProperties": False,
        },
    )


def finished_status(version: int, finished: datetime) -> dict[str, Any]:
    at = finished.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "phase": "Completed",
        "conditions": [
            {"type": "Resolved", "status": "True", "reason": "Resolved", "message": "ok"},
            {"type": "Succeeded", "status": "True", "reason": "Completed", "message": ""},
        ],
        "resolved": {
            "selector": "version",
            "version": version,
            "deployment": f"{FLOW}-v{version}",
            "snapshotName": f"kitaru::{FLOW}::v{version}",
            "image": IMAGE,
            "inputsHash": "0" * 64,
        },
        "jobName": "gone",
        "attempts": 1,
        "startTime": at,
        "completionTime": at,
        "result": {"summary": "researched durable agents " * 4},
        "reason": "Completed",
    }


def promotion_runs(shape: Shape) -> int:
    """Finished runs of v1 (`create_finished` spreads runs over the versions)."""
    return -(-shape.finished // shape.versions)


async def fill_promotion(http: aiohttp.ClientSession, ns: str, shape: Shape) -> None:
    route = {
        "apiVersion": f"{G}/{V}",
        "kind": "FlowRoute",
        "metadata": {"name": f"{FLOW}.canary"},
        "spec": {"flow": FLOW, "tag": "canary", "exclusive": True, "versions": [1]},
    }
    await request(http, "POST", f"{KITARU}/namespaces/{ns}/flowroutes", route)
    promotion = {
        "apiVersion": f"{G}/{V}",
        "kind": "FlowPromotion",
        "metadata": {"name": PROMOTION},
        "spec": {
            "flow": FLOW,
            "fromTag": "canary",
            "toTag": "stable",
            "minRuns": shape.finished + 1,
        },
    }
    await request(http, "POST", f"{KITARU}/namespaces/{ns}/flowpromotions", promotion)


async def fill(http: aiohttp.ClientSession, ns: str, shape: Shape, promotion: bool) -> None:
    await request(http, "POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
    await request(
        http,
        "POST",
        f"/api/v1/namespaces/{ns}/resourcequotas",
        {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}},
    )
    limit = asyncio.Semaphore(CONCURRENCY)
    base = datetime.now(UTC) - timedelta(hours=1)

    async def create_version(version: int) -> None:
        async with limit:
            await request(
                http, "POST", f"{KITARU}/namespaces/{ns}/flowdeployments", deployment(version)
            )

    async def create_finished(index: int) -> None:
        version = index % shape.versions + 1
        path = f"{KITARU}/namespaces/{ns}/flowinvocations"
        body = build_invocation(
            FLOW, name=f"{FLOW}-done-{index:06d}", version=version, inputs={"topic": f"run {index}"}
        )
        async with limit:
            created = await request(http, "POST", path, body)
            created["status"] = finished_status(version, base + timedelta(seconds=index / 100))
            await request(http, "PUT", f"{path}/{body['metadata']['name']}/status", created)

    await asyncio.gather(*(create_version(v) for v in range(1, shape.versions + 1)))
    if promotion:  # before the runs: a promotion counts runs created after it
        await fill_promotion(http, ns, shape)
    await asyncio.gather(*(create_finished(i) for i in range(shape.finished)))


# --- observing the operator ----------------------------------------------------------


def proc_stat(pid: int) -> tuple[float, int, int]:
    """(CPU seconds, RSS KiB, peak RSS KiB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return ticks / 100, int(status["VmRSS"].split()[0]), int(status["VmHWM"].split()[0])


def _current(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    # v1 holds `default`, and `canary` too with --promotion
    wanted = {"default", "default,canary"} if obj["spec"]["version"] == 1 else {""}
    return (
        status.get("observedGeneration") == obj["metadata"]["generation"]
        and status.get("tagSummary", "") in wanted
    )


async def wait_ready(http: aiohttp.ClientSession, namespaces: list[str], versions: int) -> None:
    """Until every version's status is current and each `default` route Ready, by a
    watch on versions (from a list taken before the operator started) and a GET per
    namespace of its default route."""
    scope = "" if len(namespaces) > 1 else f"/namespaces/{namespaces[0]}"
    path = f"{KITARU}{scope}/flowdeployments"
    current: set[tuple[str, str]] = set()
    listed = await request(http, "GET", path)
    rv = listed["metadata"]["resourceVersion"]
    want = versions * len(namespaces)

    async def routes_ready() -> bool:
        for ns in namespaces:
            async with http.get(f"{KITARU}/namespaces/{ns}/flowroutes/{FLOW}.default") as r:
                if r.status != 200:
                    return False
                route = json.loads(await r.read())
            conditions = (route.get("status") or {}).get("conditions") or []
            if not any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                return False
        return True

    while True:
        params = {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true"}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=2)
        try:
            async with http.get(path, params=params, timeout=timeout) as response:
                async for line in response.content:
                    event = json.loads(line)
                    obj = event["object"]
                    rv = obj["metadata"].get("resourceVersion", rv)
                    key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
                    if event["type"] == "BOOKMARK":
                        continue
                    if _current(obj):
                        current.add(key)
                    else:
                        current.discard(key)
                    if len(current) == want and await routes_ready():
                        return
        except TimeoutError:
            pass  # quiet for 2 s: check the routes, then watch on
        if len(current) == want and await routes_ready():
            return


async def wait_for_log(path: Path, text: str, timeout: float = 600) -> None:
    """Until the operator's log has a line with `text`."""
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {text!r} in {path} after {timeout:.0f} s")
        await asyncio.sleep(0.2)


async def dispatch(http: aiohttp.ClientSession, ns: str) -> list[float]:
    """Latencies of `DISPATCHES` invocations of `default` at `DISPATCH_RATE`/s."""
    started: dict[str, float] = {}
    seen: dict[str, float] = {}

    async def watch_jobs() -> None:
        params = {"watch": "1"}
        async with http.get(
            f"/apis/batch/v1/namespaces/{ns}/jobs", params=params, timeout=aiohttp.ClientTimeout()
        ) as response:
            async for line in response.content:
                if line.strip():
                    seen.setdefault(
                        json.loads(line)["object"]["metadata"]["name"], time.monotonic()
                    )

    async def create(name: str) -> None:
        body = build_invocation(FLOW, name=name, inputs={"topic": name})
        started[name] = time.monotonic()
        await request(http, "POST", f"{KITARU}/namespaces/{ns}/flowinvocations", body)

    watcher = asyncio.create_task(watch_jobs())
    await asyncio.sleep(0.5)
    origin = time.monotonic()
    creates = []
    for i in range(DISPATCHES):
        await asyncio.sleep(max(0.0, origin + i / DISPATCH_RATE - time.monotonic()))
        creates.append(asyncio.create_task(create(f"{FLOW}-new-{i:02d}")))
    await asyncio.gather(*creates)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(n in seen for n in started):
        await asyncio.sleep(0.05)
    watcher.cancel()
    return [seen[n] - t for n, t in started.items() if n in seen]


@dataclass
class Result:
    shape: Shape
    fill_seconds: float
    ready_seconds: float
    listed_seconds: float  # until retention had listed every finished run
    rss_ready_mb: float
    rss_idle_mb: float
    peak_mb: float
    idle_cpu: float  # fraction of a core
    latencies: list[float]
    counted_seconds: float | None = None  # until the promotion counted every run (--promotion)

    def row(self, base: Result) -> str:
        p50, base_p50 = pct(self.latencies, 0.5), pct(base.latencies, 0.5)
        ready = self.ready_seconds / base.ready_seconds
        rss = self.rss_idle_mb / base.rss_idle_mb
        return (
            f"| {self.shape.label} | {self.ready_seconds:.1f} s ({ready:.1f}x) "
            f"| {self.listed_seconds:.1f} s "
            f"| {self.rss_idle_mb:.0f} MB ({rss:.2f}x), peak {self.peak_mb:.0f} "
            f"| {self.idle_cpu * 100:.1f} % "
            f"| {len(self.latencies)}/{DISPATCHES}, {summary(self.latencies)} "
            f"({p50 / base_p50:.2f}x) | {self.fill_seconds:.0f} s |"
            + ("" if self.counted_seconds is None else f" {self.counted_seconds:.1f} s |")
        )


async def wait_counted(http: aiohttp.ClientSession, ns: str, runs: int) -> None:
    """Until the waiting promotion's status counts `runs` finished runs."""
    path = f"{KITARU}/namespaces/{ns}/flowpromotions/{PROMOTION}"
    while ((await request(http, "GET", path)).get("status") or {}).get("runs") != runs:
        await asyncio.sleep(0.2)


async def run_shape(
    shape: Shape, idle_seconds: float, extra_args: list[str], promotion: bool = False
) -> Result:
    cfg = configuration()
    names = (
        [f"{PREFIX}a-{i:03d}" for i in range(shape.namespaces)]
        if shape.all_namespaces
        else [f"{PREFIX}{shape.versions}-{shape.finished}"]
    )
    async with session(cfg, limit=CONCURRENCY + 8) as http:
        started = time.monotonic()
        for ns in names:
            await fill(http, ns, shape, promotion)
        fill_seconds = time.monotonic() - started
        scope = ["--all-namespaces"] if shape.all_namespaces else ["--namespace", names[0]]
        command = [sys.executable, "-m", "kitaru_operator", *scope, "--metrics-port", "0"]
        log_path = Path("/tmp") / f"bench-scale-{shape.versions}-{shape.finished}.log"
        log = log_path.open("wb")
        operator = subprocess.Popen(
            [*command, "--history-limit", "none", *extra_args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "KUBECONFIG": KUBECONFIG},
        )
        try:
            started = time.monotonic()
            await wait_ready(http, names, shape.versions)
            ready_seconds = time.monotonic() - started
            _, rss_ready, _ = proc_stat(operator.pid)
            await wait_for_log(log_path, "retention: listed finished runs")
            listed_seconds = time.monotonic() - started
            counted_seconds = None
            if promotion:
                await asyncio.gather(
                    *(wait_counted(http, ns, promotion_runs(shape)) for ns in names)
                )
                counted_seconds = time.monotonic() - started
            cpu_before, _, _ = proc_stat(operator.pid)
            await asyncio.sleep(idle_seconds)
            cpu_after, rss_idle, _ = proc_stat(operator.pid)
            latencies = await dispatch(http, names[0])
            _, _, peak = proc_stat(operator.pid)
        finally:
            operator.send_signal(signal.SIGKILL)
            operator.wait()
    return Result(
        shape,
        fill_seconds,
        ready_seconds,
        listed_seconds,
        rss_ready / 1024,
        rss_idle / 1024,
        peak / 1024,
        (cpu_after - cpu_before) / idle_seconds,
        latencies,
        counted_seconds,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases", default=",".join(SHAPES), help=f"comma-separated of {', '.join(SHAPES)}"
    )
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument(
        "--promotion", action="store_true", help="a waiting promotion counting v1's runs"
    )
    parser.add_argument("--operator-arg", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    k8s = api()
    results = []
    for key in args.cases.split(","):
        wait_namespaces_gone(k8s, PREFIX)
        shape = SHAPES[key]
        print(f"case {shape.label} ...", flush=True)
        result = asyncio.run(run_shape(shape, args.idle_seconds, args.operator_arg, args.promotion))
        results.append(result)
        print(result.row(results[0]), flush=True)
    wait_namespaces_gone(k8s, PREFIX)
    print(
        "\n| case (N versions, M finished) | ready | runs listed | RSS after idle (peak) "
        "| idle CPU | dispatched, latency | fill |"
        + (" promotion counted |" if args.promotion else "")
        + "\n|---|---|---|---|---|---|---|"
        + ("---|" if args.promotion else "")
    )
    for result in results:
        print(result.row(results[0]))
    print(f"ratios to the {results[0].shape.label} case of this run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
