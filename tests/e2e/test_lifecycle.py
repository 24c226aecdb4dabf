"""The end of an invocation's life: retention deletes a finished invocation after its
`ttlSecondsAfterFinished`, or once its flow has its history limit of newer finished runs;
its Job and pods go with it through owner references."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from flow_support import GROUP, VERSION, Kitaru
from kitaru.core.retention import Retention
from support import OperatorProcess, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")


@pytest.fixture
def kitaru(k8s: kubernetes.client.ApiClient, namespace: str) -> Kitaru:
    client = Kitaru(k8s, namespace)
    client.ship_flows()
    return client


def invocation(kitaru: Kitaru, name: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = kitaru.custom.get_namespaced_custom_object(
            GROUP, VERSION, kitaru.ns, "flowinvocations", name
        )
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


def pods_of(kitaru: Kitaru, name: str) -> list[Any]:
    selector = f"kitaru.dev/invocation={name}"
    return list(kitaru.core.list_namespaced_pod(kitaru.ns, label_selector=selector).items)


def test_ttl_deletes_the_invocation_its_job_and_pods(running_operator: Any, kitaru: Kitaru) -> None:
    kitaru.deploy("research_agent", 1, "research_agent", {"topic": "durable execution"})
    kitaru.wait_default("research_agent")
    kept = kitaru.invoke("research_agent", name="kept")  # no TTL: stays
    short = kitaru.invoke("research_agent", name="short-lived", retention=Retention(ttl_seconds=2))

    # While it runs: a Job named after the invocation and owned by it, and its pod.
    job = wait_for(lambda: kitaru.batch.read_namespaced_job(short, kitaru.ns), 120, message="Job")
    uid = wait_for(lambda: invocation(kitaru, short), 10)["metadata"]["uid"]
    owners = [(o.kind, o.name, o.uid) for o in job.metadata.owner_references or []]
    assert ("FlowInvocation", short, uid) in owners
    wait_for(lambda: pods_of(kitaru, short), 120, message="the run's pod")

    # Completed first (the TTL counts from the finish), with its result.
    seen: list[dict[str, Any]] = []

    def completed_or_gone() -> bool:
        obj = invocation(kitaru, short)
        if obj is None:
            return True
        seen.append(obj.get("status") or {})
        return seen[-1].get("phase") == "Completed"

    wait_for(completed_or_gone, 180, message=f"invocation {short} Completed")
    last = seen[-1] if seen else {}
    assert last.get("phase") == "Completed", f"deleted before it was seen finished: {last}"
    assert last["result"]["topic"] == "durable execution", last
    assert last["completionTime"], last

    # Then deleted by the operator once the TTL has passed; the garbage collector takes
    # the Job, and the Job's pods, through the owner references.
    wait_for(lambda: invocation(kitaru, short) is None, 60, message="invocation deleted by TTL")
    wait_for(lambda: not kitaru.job_exists(short), 60, message="its Job garbage-collected")
    wait_for(lambda: not pods_of(kitaru, short), 90, message="its pods garbage-collected")

    # Only the TTL did it: the invocation without one is finished and still there.
    status = kitaru.wait(kept, timeout=120)
    assert status["phase"] == "Completed", status
    assert invocation(kitaru, kept) is not None and kitaru.job_exists(kept)


@pytest.fixture
def limited_operator(namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The operator with a history limit of 2 finished runs per flow."""
    operator = OperatorProcess(namespace, tmp_path, extra_args=("--history-limit", "2"))
    operator.start()
    yield operator
    operator.stop()


def test_history_limit_keeps_the_newest_runs_and_never_a_running_one(
    limited_operator: OperatorProcess, kitaru: Kitaru
) -> None:
    kitaru.deploy("sleeper", 1, "sleeper", {"seconds": 0})
    kitaru.wait_default("sleeper")
    running = kitaru.invoke("sleeper", name="running", inputs={"seconds": 120})
    kitaru.wait(running, timeout=120, phases=("Running",))
    quick = []
    for index in range(3):  # one after the other, so their finish order is known
        quick.append(kitaru.invoke("sleeper", name=f"quick-{index}"))
        assert kitaru.wait(quick[-1], timeout=120)["phase"] == "Completed"

    # Three finished runs, a limit of two: the oldest goes, with its Job and pods.
    wait_for(lambda: invocation(kitaru, quick[0]) is None, 60, message="oldest run deleted")
    wait_for(lambda: not kitaru.job_exists(quick[0]), 60, message="its Job collected")
    wait_for(lambda: not pods_of(kitaru, quick[0]), 90, message="its pods collected")
    assert all(invocation(kitaru, name) is not None for name in quick[1:])
    # The run that is still running is never a candidate, however old.
    assert kitaru.status(running)["phase"] == "Running"

    # Once it finishes (cancelled), it is the newest finished run: the next oldest goes.
    kitaru.custom.patch_namespaced_custom_object(
        GROUP, VERSION, kitaru.ns, "flowinvocations", running, {"spec": {"cancelRequested": True}}
    )
    assert kitaru.wait(running, timeout=60)["phase"] == "Cancelled"
    wait_for(lambda: invocation(kitaru, quick[1]) is None, 60, message="next oldest deleted")
    assert invocation(kitaru, quick[2]) is not None and invocation(kitaru, running) is not None
    assert "deleted by retention" in limited_operator.log()
