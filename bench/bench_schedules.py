"""FlowSchedules at scale: many idle schedules must not keep the operator busy, and a
restart must re-arm them from memory.

    python -m kitaru_localnode.cluster up --no-node --dir /tmp/benchcluster
    KUBECONFIG=/tmp/benchcluster/kubeconfig kubectl apply -f crds/
    KUBECONFIG=/tmp/benchcluster/kubeconfig python bench/bench_schedules.py [--idle 1000]

In one namespace, while no operator runs: one flow version, `--idle` daily schedules
and `--minutely` per-minute schedules (their runs never start without a node; each
tick adds one per schedule). Then the operator
starts and we measure:

- armed: start -> every schedule has a status with its next tick, and the operator's
  CPU seconds until then;
- tick: for the per-minute schedules, the delay from the first tick after arming to
  each run's creation (creationTimestamp: 1 s resolution);
- idle CPU over `--window` seconds after that, as % of one core;
- restart: a second operator start -> its "schedules: N armed" log line, its CPU
  seconds, and how many schedules' status it wrote (none should change).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
from kitaru.core.manifests import build_deployment, build_route
from kitaru.core.routing import RouteView

REPO = Path(__file__).resolve().parents[1]
GROUP, VERSION = "kitaru.dev", "v1alpha1"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_operator(namespace: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "kitaru_operator", "-n", namespace, "--metrics-port", "0"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def schedule(name: str, cron: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FlowSchedule",
        "metadata": {"name": name},
        "spec": {"schedule": cron, "flow": "bench"},
    }


def parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle", type=int, default=1000, help="daily schedules")
    parser.add_argument("--minutely", type=int, default=50, help="per-minute schedules")
    parser.add_argument("--window", type=float, default=60, help="idle window, seconds")
    args = parser.parse_args()
    kubernetes.config.load_kube_config()
    core, custom = kubernetes.client.CoreV1Api(), kubernetes.client.CustomObjectsApi()
    namespace = f"bench-sched-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    logs = Path(tempfile.mkdtemp(prefix="bench-sched-"))
    operator: subprocess.Popen[bytes] | None = None

    def create(plural: str, body: dict[str, Any]) -> None:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)

    def statuses() -> dict[str, dict[str, Any]]:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "flowschedules")
        return {i["metadata"]["name"]: i for i in items["items"]}

    try:
        create(
            "flowdeployments",
            build_deployment("bench", 1, entrypoint="m:bench", image="kitaru.local/never:run"),
        )
        create(
            "flowroutes",
            build_route(RouteView("bench", "default", True, frozenset({1}))),
        )
        began = time.monotonic()
        for i in range(args.idle):
            create("flowschedules", schedule(f"daily-{i}", "@daily"))
        for i in range(args.minutely):
            create("flowschedules", schedule(f"minutely-{i}", "* * * * *"))
        total = args.idle + args.minutely
        print(f"created {total} schedules in {time.monotonic() - began:.1f} s")

        operator = start_operator(namespace, logs / "operator-1.log")
        began = time.monotonic()
        while True:
            current = statuses()
            armed = sum(
                1 for o in current.values() if (o.get("status") or {}).get("nextScheduleTime")
            )
            if armed == total:
                break
            time.sleep(1)
        armed_at = datetime.now(UTC)
        print(f"armed: {time.monotonic() - began:.1f} s, CPU {cpu_seconds(operator.pid):.1f} s")

        if args.minutely:

            def after_arming() -> list[dict[str, Any]]:
                runs = custom.list_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    "flowinvocations",
                    label_selector="kitaru.dev/schedule",
                )["items"]
                return [
                    r
                    for r in runs
                    if parse(r["metadata"]["annotations"]["kitaru.dev/scheduled-at"]) > armed_at
                ]

            while len(runs := after_arming()) < args.minutely:
                time.sleep(1)
            delays = [
                (
                    parse(r["metadata"]["creationTimestamp"])
                    - parse(r["metadata"]["annotations"]["kitaru.dev/scheduled-at"])
                ).total_seconds()
                for r in runs
            ]
            print(
                f"tick -> run created: median {statistics.median(delays):.1f} s, "
                f"max {max(delays):.1f} s ({len(delays)} runs)"
            )

        before = cpu_seconds(operator.pid)
        time.sleep(args.window)
        idle = cpu_seconds(operator.pid) - before
        share = 100 * idle / args.window
        print(f"idle CPU over {args.window:.0f} s: {idle:.2f} s ({share:.1f}% of a core)")

        operator.send_signal(signal.SIGTERM)
        operator.wait(30)
        versions = {n: o["metadata"]["resourceVersion"] for n, o in statuses().items()}
        operator = start_operator(namespace, logs / "operator-2.log")
        began = time.monotonic()
        while "schedules:" not in (logs / "operator-2.log").read_text():
            time.sleep(0.2)
        print(
            f"restart: armed after {time.monotonic() - began:.1f} s, "
            f"operator CPU {cpu_seconds(operator.pid):.1f} s"
        )
        time.sleep(10)
        after = {n: o["metadata"]["resourceVersion"] for n, o in statuses().items()}
        changed = [n for n in after if after[n] != versions.get(n)]
        print(
            f"restart: {len(changed)} schedule(s) written in its first 10 s "
            "(per-minute ones when a tick passed)"
        )
    finally:
        if operator is not None and operator.poll() is None:
            operator.send_signal(signal.SIGTERM)
            operator.wait(30)
        core.delete_namespace(namespace)
        print(f"operator logs: {logs}")


if __name__ == "__main__":
    main()
