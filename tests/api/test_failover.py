"""Two operator replicas: exactly one is active (a Lease); when it is killed mid-burst
the standby takes over and every invocation is still dispatched exactly once."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from kitaru.core.manifests import build_deployment, build_invocation
from support import OperatorProcess, create, kubectl, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")
LEASE_SECONDS = 4
BURST = 30


def replica(namespace: str, log_dir: Path) -> OperatorProcess:
    log_dir.mkdir()
    return OperatorProcess(
        namespace,
        log_dir,
        extra_args=(
            "--leader-elect",
            f"--leader-elect-namespace={namespace}",
            f"--leader-elect-lease-seconds={LEASE_SECONDS}",
        ),
    )


def jobs(namespace: str) -> dict[str, dict]:
    listed = json.loads(kubectl("get", "jobs", "-o", "json", namespace=namespace).stdout)
    return {job["metadata"]["name"]: job for job in listed["items"]}


def test_killing_the_leader_mid_burst_loses_and_repeats_nothing(
    namespace: str, tmp_path: Path
) -> None:
    # No pod may run: the test is about dispatch (Jobs), not the node.
    kubectl("create", "quota", "no-pods", "--hard=pods=0", namespace=namespace)
    first, second = replica(namespace, tmp_path / "a"), replica(namespace, tmp_path / "b")
    try:
        first.start()
        wait_for(lambda: "became the leader" in first.log(), 30, message="a leader")
        second.start()  # ready as a standby: it serves its probes while it waits
        assert "became the leader" not in second.log()

        create(
            build_deployment("square", 1, entrypoint="m:f", image="ghcr.io/kitaru-k8s/runner:dev"),
            namespace,
        )
        wait_for(
            lambda: (
                kubectl(
                    "get", "froute", "square.default", namespace=namespace, check=False
                ).returncode
                == 0
            ),
            30,
            message="default route",
        )
        names = [f"burst-{i:02d}" for i in range(BURST)]
        killed_at = 0.0
        for index, name in enumerate(names):
            create(build_invocation("square", name=name, inputs={"n": 3}), namespace)
            if index == BURST // 3:
                first.kill()
                killed_at = time.monotonic()
        wait_for(
            lambda: set(names) <= set(jobs(namespace)),
            timeout=LEASE_SECONDS * 3 + 60,
            message="a Job for every invocation",
        )
        dispatched_after = time.monotonic() - killed_at
        print(f"failover: every invocation dispatched {dispatched_after:.1f} s after the kill")
        assert "became the leader" in second.log()

        # Exactly once: one Job per invocation, owned by it (by uid), named in its status.
        found = jobs(namespace)
        runs = json.loads(kubectl("get", "finv", "-o", "json", namespace=namespace).stdout)
        for run in runs["items"]:
            owners = found[run["metadata"]["name"]]["metadata"]["ownerReferences"]
            assert [o["uid"] for o in owners] == [run["metadata"]["uid"]]
        wait_for(
            lambda: all(
                (r.get("status") or {}).get("jobName") == r["metadata"]["name"]
                for r in json.loads(
                    kubectl("get", "finv", "-o", "json", namespace=namespace).stdout
                )["items"]
            ),
            30,
            message="every invocation's status names its Job",
        )
        # The standby created nothing while it was one; no Job was created twice. (A Job
        # created by the leader just before the kill may miss its log line.)
        standby, leading = second.log().split("became the leader", 1)
        assert "created job" not in standby
        created = re.findall(rf"created job {namespace}/(\S+)", first.log() + leading)
        assert len(created) == len(set(created)) and set(created) <= set(names)
    finally:
        first.kill()
        second.stop()
