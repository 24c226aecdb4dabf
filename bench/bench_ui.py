"""The dashboard at scale: how long each page takes and how big it is with many versions
and finished runs of one flow, as a ratio to the (10, 10) case of the same run.

Run it on a control plane of your own (no node needed, no operator runs):

    python -m kitaru_localnode.cluster up --no-node --dir /tmp/benchcluster
    KUBECONFIG=/tmp/benchcluster/kubeconfig kubectl apply -f crds/
    KUBECONFIG=/tmp/benchcluster/kubeconfig python bench/bench_ui.py
    python -m kitaru_localnode.cluster down --dir /tmp/benchcluster

Each case fills a namespace as bench_scale.py does (N versions of `agent`, M finished
runs spread over them), adds `default` on v1 and an exclusive `canary` on vN, starts
`kitaru ui` on it and times each page (median of 3 GETs after one warm-up).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import urllib.request

from bench_scale import FLOW, SHAPES, Shape, fill
from benchlib import (
    KITARU,
    KUBECONFIG,
    REPO,
    api,
    configuration,
    request,
    session,
    wait_namespaces_gone,
)
from kitaru.core.manifests import build_route
from kitaru.core.routing import RouteView

PREFIX = "uibench-"
PAGES = (
    "/",
    f"/flows/{FLOW}",
    f"/flows/{FLOW}/invoke?tag=canary",
    "/runs",
    f"/runs?flow={FLOW}&tag=canary",
    f"/runs/{FLOW}-done-000000",
)


async def populate(ns: str, shape: Shape) -> float:
    started = time.monotonic()
    async with session(configuration()) as http:
        await fill(http, ns, shape)
        for tag, version in (("default", 1), ("canary", shape.versions)):
            route = build_route(RouteView(FLOW, tag, True, frozenset({version})))
            await request(http, "POST", f"{KITARU}/namespaces/{ns}/flowroutes", route)
    return time.monotonic() - started


def get(url: str) -> tuple[float, int]:
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=600) as response:
        size = len(response.read())
        assert response.status == 200, (url, response.status)
    return time.monotonic() - started, size


def measure(ns: str) -> dict[str, tuple[float, int]]:
    port = 18000 + os.getpid() % 1000
    env = {**os.environ, "KUBECONFIG": KUBECONFIG, "KITARU_PROJECT": ns}
    argv = [sys.executable, "-m", "kitaru.cli.main", "ui", "--port", str(port)]
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                get(f"{base}/healthz")
                break
            except OSError:
                time.sleep(0.2)
        results = {}
        for page in PAGES:
            get(base + page)
            timings = [get(base + page) for _ in range(3)]
            results[page] = (statistics.median(t for t, _ in timings), timings[0][1])
        return results
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="10x10,1kx1k,10kx10k")
    args = parser.parse_args()
    k8s = api()
    rows = []
    for key in args.cases.split(","):
        wait_namespaces_gone(k8s, PREFIX)
        shape = SHAPES[key]
        ns = f"{PREFIX}{key.lower()}"
        print(f"case {shape.label}: filling ...", flush=True)
        fill_seconds = asyncio.run(populate(ns, shape))
        rows.append((shape, fill_seconds, measure(ns)))
    wait_namespaces_gone(k8s, PREFIX)
    base = rows[0][2]
    print("\n| page | " + " | ".join(s.label for s, _, _ in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for page in PAGES:
        cells = []
        for _, _, result in rows:
            seconds, size = result[page]
            ratio = seconds / base[page][0]
            cells.append(f"{seconds * 1000:.0f} ms ({ratio:.1f}x), {size / 1024:.0f} KiB")
        print(f"| `{page}` | " + " | ".join(cells) + " |")
    print("fill: " + ", ".join(f"{s.label} {f:.0f} s" for s, f, _ in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
