"""Running a Job ourselves (`spec.managedBy`): pods and status as the Job API says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kitaru.core.job_control import (
    JobControl,
    PodView,
    adoption_patch,
    build_pod,
    control_job,
    pod_outcome,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
STARTED = "2025-01-01T00:00:00Z"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stamp(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(attempt: int, outcome: str = "active", **kw: Any) -> PodView:
    return PodView(name=f"job-{attempt}", attempt=attempt, outcome=outcome, **kw)


def types(control: JobControl) -> list[str]:
    assert control.status is not None
    return [c["type"] for c in control.status.get("conditions") or []]


def test_a_new_job_gets_its_first_pod_and_a_start_time() -> None:
    control = control_job(0, None, {}, [], at(0))
    assert control.create_attempt == 0
    assert control.status == {"startTime": STARTED, "active": 1, "succeeded": 0, "failed": 0}


def test_a_running_pod_is_left_alone_and_reported() -> None:
    status = {"startTime": STARTED, "active": 1, "succeeded": 0, "failed": 0}
    assert control_job(0, None, status, [pod(0)], at(5)) == JobControl()
    ready = control_job(0, None, status, [pod(0, ready=True)], at(5))
    assert ready.status == {**status, "ready": 1} and ready.create_attempt is None


def test_success_marks_criteria_met_then_complete_with_a_completion_time() -> None:
    status = {"startTime": STARTED, "active": 1, "succeeded": 0, "failed": 0}
    control = control_job(0, None, status, [pod(0, "succeeded")], at(3))
    assert types(control) == ["SuccessCriteriaMet", "Complete"]
    assert control.status is not None
    assert control.status["completionTime"] == stamp(3) and control.status["active"] == 0
    assert control.status["succeeded"] == 1 and control.create_attempt is None
    # Finished: nothing changes any more, whatever the pods do.
    assert control_job(0, None, control.status, [pod(0, "succeeded")], at(9)) == JobControl()


def test_failures_retry_after_the_job_apis_delay_up_to_the_backoff_limit() -> None:
    status = {"startTime": STARTED, "active": 1, "succeeded": 0, "failed": 0}
    first = pod(0, "failed", finished_at=stamp(2))
    waiting = control_job(2, None, status, [first], at(5))
    assert waiting.create_attempt is None and waiting.wake_after == 7.0  # 10 s after
    assert waiting.status is not None and waiting.status["failed"] == 1
    retry = control_job(2, None, waiting.status, [first], at(12))
    assert retry.create_attempt == 1 and retry.status is not None
    assert retry.status["active"] == 1 and retry.status["startTime"] == STARTED  # kept
    second = pod(1, "failed", finished_at=stamp(14))
    later = control_job(2, None, retry.status, [first, second], at(20))
    assert later.wake_after == 14.0  # 20 s after the second failure
    third = pod(2, "failed", finished_at=stamp(40))
    done = control_job(2, None, later.status or {}, [first, second, third], at(41))
    assert types(done) == ["FailureTarget", "Failed"]
    assert done.status is not None and done.status["failed"] == 3
    assert done.status["conditions"][-1]["reason"] == "BackoffLimitExceeded"


def test_the_deadline_stops_the_pod_before_the_job_fails() -> None:
    status = {"startTime": STARTED, "active": 1, "succeeded": 0, "failed": 0}
    assert control_job(0, 30, status, [pod(0)], at(10)).wake_after == 20.0
    stopping = control_job(0, 30, status, [pod(0)], at(31))
    assert stopping.delete == ("job-0",)
    assert types(stopping) == ["FailureTarget"]  # not Failed while a pod still runs
    assert stopping.status is not None and stopping.status["terminating"] == 1
    gone = control_job(0, 30, stopping.status, [], at(33))
    assert types(gone) == ["FailureTarget", "Failed"]
    assert gone.status is not None and gone.status["terminating"] == 0
    assert gone.status["conditions"][-1]["reason"] == "DeadlineExceeded"


def test_counters_never_go_down_when_pods_disappear() -> None:
    status = {"startTime": STARTED, "active": 0, "succeeded": 0, "failed": 2}
    control = control_job(5, None, status, [], at(600))
    assert control.status is not None and control.status["failed"] == 2
    assert control.create_attempt == 0  # numbering restarts only if every pod is gone


def test_outcomes_follow_the_container_before_the_pod_phase() -> None:
    assert pod_outcome("Running", 0) == "succeeded"
    assert pod_outcome("Running", 1) == "failed"
    assert pod_outcome("Pending", None) == "active"
    assert pod_outcome("Failed", None) == "failed"


def test_a_pod_is_the_jobs_template_owned_by_the_job() -> None:
    job = {
        "metadata": {"name": "run-1", "namespace": "ns", "uid": "u-1"},
        "spec": {
            "template": {
                "metadata": {"labels": {"batch.kubernetes.io/controller-uid": "u-1"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "flow"}]},
            }
        },
    }
    built = build_pod(job, 2)
    assert built["metadata"]["name"] == "run-1-2"
    assert built["metadata"]["labels"] == {
        "batch.kubernetes.io/controller-uid": "u-1",
        "kitaru.dev/attempt": "2",
    }
    (owner,) = built["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("Job", "u-1", True)
    assert built["spec"] == job["spec"]["template"]["spec"]


def test_a_first_pod_made_beside_its_job_is_adopted_by_it() -> None:
    manifest = {
        "metadata": {"name": "run-1", "namespace": "ns"},
        "spec": {
            "template": {"metadata": {"labels": {"kitaru.dev/invocation": "run-1"}}, "spec": {}}
        },
    }
    invocation = {"kind": "FlowInvocation", "name": "run-1", "uid": "i-1", "controller": False}
    early = build_pod(manifest, 0, owner=invocation)
    assert early["metadata"]["ownerReferences"] == [invocation]
    assert "batch.kubernetes.io/controller-uid" not in early["metadata"]["labels"]
    created = {**manifest, "metadata": {**manifest["metadata"], "uid": "j-1"}}
    patch = adoption_patch(created)["metadata"]
    assert patch["labels"]["batch.kubernetes.io/controller-uid"] == "j-1"
    assert patch["labels"]["job-name"] == "run-1"
    (owner,) = patch["ownerReferences"]  # the Job alone: deleting it takes the pod
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("Job", "j-1", True)


def test_a_pod_made_before_the_first_pass_starts_the_job_and_its_deadline() -> None:
    control = control_job(0, 30, {}, [pod(0)], at(1))
    assert control.create_attempt is None
    assert control.status is not None and control.status["startTime"] == stamp(1)
    assert control.wake_after == 30.0
