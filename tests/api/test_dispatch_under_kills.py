"""Exactly once under `kill -9`: a burst of 200 invocations is dispatched while the
operator is SIGKILLed twice, and each gets exactly one Job, its own (named by it, owned by
it, with its inputs); no Job is made twice, none is missing.

This is dispatch, so the namespace's quota admits no pod: the Jobs are real, their pods
are never made. That runs finish with the right results across operator kills (and the
crashes of every other component) is proven with real pods on the node by the fault
suite, tests/chaos/test_faults.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from flow_support import GROUP, VERSION, Kitaru
from support import OperatorProcess, kubectl, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

COUNT = 200


@pytest.fixture
def kitaru(k8s: kubernetes.client.ApiClient, namespace: str) -> Kitaru:
    kubectl("create", "quota", "no-pods", "--hard=pods=0", namespace=namespace)
    client = Kitaru(k8s, namespace)
    client.ship_flows()
    return client


@pytest.fixture
def operator(namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    op = OperatorProcess(namespace, tmp_path, resync_seconds=2)
    yield op
    op.kill()
    assert "Traceback" not in op.log(), op.log()


def test_a_burst_is_dispatched_exactly_once_across_operator_kills(
    operator: OperatorProcess, kitaru: Kitaru
) -> None:
    operator.start()
    kitaru.deploy("square", 1, "square")
    kitaru.wait_default("square")
    names = [f"sq-{n}" for n in range(COUNT)]

    def create(chunk: list[int]) -> None:
        for n in chunk:
            kitaru.invoke("square", name=names[n], inputs={"n": n})

    threads = [threading.Thread(target=create, args=(list(range(i, COUNT, 8)),)) for i in range(8)]
    for thread in threads:
        thread.start()
    for _ in range(2):  # two SIGKILLs while the burst is being dispatched
        wait_for(lambda: len(kitaru.jobs()) >= 1, 30)
        time.sleep(0.5)  # let the operator get into the middle of its work
        operator.kill()
        operator.start()
    for thread in threads:
        thread.join()

    def dispatched() -> dict[str, dict[str, Any]] | None:
        items = kitaru.custom.list_namespaced_custom_object(
            GROUP, VERSION, kitaru.ns, "flowinvocations"
        )["items"]
        found = {i["metadata"]["name"]: i for i in items}
        done = len(found) == COUNT and all((i.get("status") or {}).get("jobName") for i in items)
        return found if done else None

    invocations = wait_for(dispatched, 180, interval=1, message=f"all {COUNT} dispatched")
    jobs = {job.metadata.name: job for job in kitaru.jobs()}
    assert sorted(jobs) == sorted(names), "exactly one Job per invocation, no other"
    for n, name in enumerate(names):
        invocation = invocations[name]
        assert invocation["status"]["jobName"] == name
        job = jobs[name]
        assert [o.uid for o in job.metadata.owner_references] == [invocation["metadata"]["uid"]]
        (container,) = job.spec.template.spec.containers
        env = {e.name: e.value for e in container.env or []}
        assert json.loads(env["KITARU_INPUTS"]) == {"n": n}, name
