"""Concurrency limits against the real API server, with the operator as a process: runs
over a limit wait in phase Queued, in order, and start as slots free — a run's pod
finishing (its status set here as the kubelet would: there is no node in this tier),
a queued run cancelled, a limit raised — and across an operator restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kitaru.core.manifests import build_deployment, build_invocation
from support import OperatorProcess, kubectl, runner_image, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

FLOW = "limited"


@pytest.fixture
def operator(namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    op = OperatorProcess(namespace, tmp_path, resync_seconds=2)
    op.start()
    yield op
    op.kill()
    assert "Traceback" not in op.log(), op.log()


def _create(namespace: str, *objects: dict[str, Any]) -> None:
    for obj in objects:  # one by one: their creation order is the queue's order
        kubectl("create", "-f", "-", namespace=namespace, input=json.dumps(obj))


def _patch(namespace: str, kind: str, name: str, patch: dict[str, Any]) -> None:
    kubectl("patch", kind, name, "--type=merge", "-p", json.dumps(patch), namespace=namespace)


def _invocations(namespace: str) -> dict[str, dict[str, Any]]:
    listed = json.loads(kubectl("get", "finv", "-o", "json", namespace=namespace).stdout)
    return {item["metadata"]["name"]: item.get("status") or {} for item in listed["items"]}


def _running_jobs(namespace: str) -> set[str]:
    """Jobs not finished: the slots taken."""
    listed = json.loads(kubectl("get", "jobs", "-o", "json", namespace=namespace).stdout)
    finished = {"Complete", "Failed"}
    return {
        job["metadata"]["name"]
        for job in listed["items"]
        if not any(
            c["type"] in finished and c["status"] == "True"
            for c in (job.get("status") or {}).get("conditions") or []
        )
        and not job["metadata"].get("deletionTimestamp")
    }


def _queue(namespace: str) -> list[tuple[str, int]]:
    """(name, queuePosition) of the Queued runs, by position."""
    queued = [
        (name, status.get("queuePosition", 0))
        for name, status in _invocations(namespace).items()
        if status.get("phase") == "Queued"
    ]
    return sorted(queued, key=lambda item: item[1])


def _parked(deployment: dict[str, Any]) -> dict[str, Any]:
    """Runs of this version ask for more CPU than any node has: they are never scheduled,
    so no kubelet runs them (also where the suite has a node), and the test reports how
    each ends instead (`_finish`)."""
    deployment["spec"].setdefault("stack", {})["resources"] = {"requests": {"cpu": "1000"}}
    return deployment


def _finish(namespace: str, invocation: str) -> None:
    """The run's pod ends as the kubelet would report it: exit 0 with a result."""
    pods = json.loads(
        kubectl(
            "get",
            "pods",
            "-l",
            f"kitaru.dev/invocation={invocation}",
            "-o",
            "json",
            namespace=namespace,
        ).stdout
    )["items"]
    assert pods, f"{invocation} has no pod"
    for pod in pods:
        container = pod["spec"]["containers"][0]
        terminated = {
            "exitCode": 0,
            "message": json.dumps({"ok": True, "result": invocation}),
            "startedAt": pod["metadata"]["creationTimestamp"],
            "finishedAt": pod["metadata"]["creationTimestamp"],
        }
        status = {
            "phase": "Succeeded",
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": terminated},
                }
            ],
        }
        kubectl(
            "patch",
            "pod",
            pod["metadata"]["name"],
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
            namespace=namespace,
        )


def _phase(namespace: str, name: str) -> str | None:
    return _invocations(namespace).get(name, {}).get("phase")


def _settled(namespace: str, running: set[str], queue: list[tuple[str, int]]) -> bool:
    """Exactly these Jobs run and this is the queue (never more Jobs than expected)."""
    jobs = _running_jobs(namespace)
    assert len(jobs) <= len(running) or not running, jobs
    return jobs == running and _queue(namespace) == queue


def test_a_flow_limit_queues_in_order_and_starts_runs_as_slots_free(
    operator: OperatorProcess, namespace: str
) -> None:
    _create(namespace, _parked(build_deployment(FLOW, 1, entrypoint="m:f", image=runner_image())))
    wait_for(lambda: kubectl("get", "froute", "limited.default", namespace=namespace), 30)
    _patch(namespace, "froute", "limited.default", {"spec": {"flowMaxConcurrency": 2}})
    runs = [f"run-{i}" for i in range(6)]
    _create(namespace, *(build_invocation(FLOW, name=name) for name in runs))

    wait_for(
        lambda: _settled(
            namespace, {"run-0", "run-1"}, [("run-2", 1), ("run-3", 2), ("run-4", 3), ("run-5", 4)]
        ),
        30,
        message="two run, four wait in order",
    )
    status = _invocations(namespace)["run-2"]
    assert "the flow allows 2 active run(s)" in status["message"]
    assert "jobName" not in status

    # Cancelled while queued: Cancelled, no Job ever; those behind it move up.
    _patch(namespace, "finv", "run-4", {"spec": {"cancelRequested": True}})
    wait_for(lambda: _phase(namespace, "run-4") == "Cancelled", 30)
    wait_for(
        lambda: _settled(namespace, {"run-0", "run-1"}, [("run-2", 1), ("run-3", 2), ("run-5", 3)]),
        30,
    )

    # A run finishing frees its slot: the head of the queue starts.
    _finish(namespace, "run-0")
    wait_for(lambda: _phase(namespace, "run-0") == "Completed", 30)
    wait_for(lambda: _settled(namespace, {"run-1", "run-2"}, [("run-3", 1), ("run-5", 2)]), 30)

    # Across a restart: a slot freed while the operator is down goes to the head, and
    # the limit still holds.
    operator.kill()
    _finish(namespace, "run-1")
    _create(namespace, build_invocation(FLOW, name="run-6"))
    operator.start()
    wait_for(lambda: _settled(namespace, {"run-2", "run-3"}, [("run-5", 1), ("run-6", 2)]), 30)

    # A raised limit starts the next in line at once.
    _patch(namespace, "froute", "limited.default", {"spec": {"flowMaxConcurrency": 3}})
    wait_for(lambda: _settled(namespace, {"run-2", "run-3", "run-5"}, [("run-6", 1)]), 30)
    assert all(_invocations(namespace)[r].get("jobName") != "run-4" for r in runs)
    assert kubectl("get", "job", "run-4", namespace=namespace, check=False).returncode != 0


def test_a_route_limit_counts_only_runs_through_that_tag(
    operator: OperatorProcess, namespace: str
) -> None:
    _create(namespace, _parked(build_deployment(FLOW, 1, entrypoint="m:f", image=runner_image())))
    wait_for(lambda: kubectl("get", "froute", "limited.default", namespace=namespace), 30)
    _patch(namespace, "froute", "limited.default", {"spec": {"maxConcurrency": 1}})
    _create(
        namespace,
        build_invocation(FLOW, name="by-tag-0"),
        build_invocation(FLOW, name="by-tag-1"),
        build_invocation(FLOW, version=1, name="pinned-0"),  # not through the tag
        build_invocation(FLOW, name="by-tag-2"),
    )
    wait_for(
        lambda: _settled(namespace, {"by-tag-0", "pinned-0"}, [("by-tag-1", 1), ("by-tag-2", 2)]),
        30,
    )
    assert "tag 'default' allows 1 active run(s)" in _invocations(namespace)["by-tag-1"]["message"]
    # Clearing the limit lets every queued run start.
    _patch(namespace, "froute", "limited.default", {"spec": {"maxConcurrency": None}})
    wait_for(lambda: _settled(namespace, {"by-tag-0", "pinned-0", "by-tag-1", "by-tag-2"}, []), 30)


def test_the_flow_limit_is_set_on_the_default_route_only(namespace: str) -> None:
    _create(namespace, _parked(build_deployment(FLOW, 1, entrypoint="m:f", image=runner_image())))
    route = {
        "apiVersion": "kitaru.dev/v1alpha1",
        "kind": "FlowRoute",
        "metadata": {"name": "limited.stable"},
        "spec": {
            "flow": FLOW,
            "tag": "stable",
            "exclusive": True,
            "versions": [1],
            "flowMaxConcurrency": 2,
        },
    }
    proc = kubectl("create", "-f", "-", namespace=namespace, input=json.dumps(route), check=False)
    assert proc.returncode == 1
    assert "flowMaxConcurrency limits the whole flow and is set on its 'default' route" in (
        proc.stderr
    )
