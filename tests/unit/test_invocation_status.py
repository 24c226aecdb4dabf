"""Invocation status derived from the invocation, its Job and its pods."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kitaru.core.invocations import (
    Failure,
    JobSummary,
    PodSummary,
    Waiting,
    derive_invocation_status,
    needs_job_deleted,
    parse_termination_message,
    summarize_job,
    summarize_pod,
)
from kitaru.core.models import (
    FlowInvocationSpec,
    FlowInvocationStatus,
    Phase,
    ResolvedChain,
    SelectorKind,
)

NOW = "2025-01-01T00:00:10Z"
CHAIN = ResolvedChain(
    selector=SelectorKind.TAG,
    tag="stable",
    version=2,
    deployment="f-v2",
    snapshot_name="kitaru::f::v2",
    image="img",
    source_sha256=None,
    inputs_hash="h",
)
SPEC = FlowInvocationSpec(flow="f", tag="stable")


def ok(result: Any) -> str:
    return json.dumps({"ok": True, "result": result})


def err(type_: str, message: str) -> str:
    return json.dumps({"ok": False, "type": type_, "message": message})


def pod(phase: str, created: str = "2025-01-01T00:00:01Z", **kw: Any) -> PodSummary:
    return PodSummary(name=f"p-{created}", created=created, phase=phase, **kw)


def derive(
    job: JobSummary | None,
    pods: list[PodSummary] = (),  # type: ignore[assignment]
    spec: FlowInvocationSpec = SPEC,
    previous: FlowInvocationStatus | None = None,
    outcome: ResolvedChain | Failure | Waiting | None = CHAIN,
) -> FlowInvocationStatus:
    return derive_invocation_status(spec, previous, outcome, job, list(pods), NOW, 1)


def condition(status: FlowInvocationStatus, type_: str) -> tuple[str, str]:
    c = next(c for c in status.conditions if c.type == type_)
    return c.status.value, c.reason


@pytest.mark.parametrize(
    ("job", "pods", "phase", "succeeded", "reason"),
    [
        (JobSummary("j"), [], Phase.PENDING, "Unknown", "Pending"),
        (JobSummary("j", active=1), [pod("Pending")], Phase.PENDING, "Unknown", "Pending"),
        (JobSummary("j", active=1), [pod("Running")], Phase.RUNNING, "Unknown", "Running"),
        (
            JobSummary("j", succeeded=1, complete=True),
            [pod("Succeeded", termination_message=ok(1))],
            Phase.COMPLETED,
            "True",
            "Completed",
        ),
        (
            JobSummary("j", failed=1, failed_reason="DeadlineExceeded", failed_message="late"),
            [pod("Failed")],
            Phase.FAILED,
            "False",
            "DeadlineExceeded",
        ),
        (
            JobSummary("j", failed=1, failed_reason="BackoffLimitExceeded", failed_message="m"),
            [pod("Failed", termination_message=err("ValueError", "boom"))],
            Phase.FAILED,
            "False",
            "FlowFailed",
        ),
        (
            JobSummary("j", failed=1, failed_reason="BackoffLimitExceeded", failed_message="m"),
            [pod("Failed", termination_message="Traceback: garbage")],
            Phase.FAILED,
            "False",
            "BackoffLimitExceeded",
        ),
        (
            JobSummary("j", failed=1, failed_reason="BackoffLimitExceeded"),
            [pod("Failed", termination_message=err("ResultTooLarge", "5000 bytes"))],
            Phase.FAILED,
            "False",
            "ResultTooLarge",
        ),
        (
            JobSummary("j", active=1),
            [pod("Pending", waiting_reason="ImageNotMapped", waiting_message="no such image")],
            Phase.FAILED,
            "False",
            "ImageNotRunnable",
        ),
        (
            JobSummary("j", active=1),
            [pod("Pending", waiting_reason="ContainerCreating")],
            Phase.PENDING,
            "Unknown",
            "Pending",
        ),
    ],
)
def test_phase_from_job_and_pods(
    job: JobSummary, pods: list[PodSummary], phase: Phase, succeeded: str, reason: str
) -> None:
    status = derive(job, pods)
    assert status.phase == phase
    assert condition(status, "Succeeded") == (succeeded, reason)
    assert condition(status, "Resolved") == ("True", "Resolved")
    assert status.resolved == CHAIN
    assert status.job_name == "j"
    assert (status.reason == reason) == phase.finished
    assert (status.completion_time is not None) == phase.finished


def test_result_and_runner_message() -> None:
    done = derive(
        JobSummary("j", succeeded=1, complete=True, completion_time="2025-01-01T00:00:05Z"),
        [pod("Succeeded", termination_message=ok({"answer": 42}))],
    )
    assert done.result == {"answer": 42}
    assert done.completion_time == "2025-01-01T00:00:05Z"
    failed = derive(
        JobSummary("j", failed=1, failed_reason="BackoffLimitExceeded"),
        [pod("Failed", termination_message=err("KeyError", "'x'"))],
    )
    assert failed.message == "KeyError: 'x'"
    assert failed.result is None


@pytest.mark.parametrize(
    "finished",
    [
        pod("Succeeded", termination_message=ok("hi")),
        # The kubelet reports the container's exit a relist before the pod's phase.
        pod("Running", exit_code=0, termination_message=ok("hi")),
    ],
    ids=["pod-succeeded", "container-exited-0"],
)
def test_a_succeeded_run_completes_before_the_job_does(finished: PodSummary) -> None:
    """The Job controller marks the Job Complete a batch period after its pod succeeded;
    the result is final as soon as the run is, and that Job is not deleted."""
    job = JobSummary("j", active=1, complete=False)
    done = derive(job, [finished])
    assert (done.phase, done.result) == (Phase.COMPLETED, "hi")
    assert done.completion_time == NOW
    assert not needs_job_deleted(done, job)
    running = derive(job, [pod("Running", exit_code=1, termination_message=err("E", "m"))])
    assert running.phase == Phase.RUNNING  # a failed attempt: the Job decides on a retry


def test_deadline_message_comes_from_kubernetes() -> None:
    status = derive(
        JobSummary("j", failed=1, failed_reason="DeadlineExceeded", failed_message="too long"),
        [pod("Failed", termination_message=err("KeyboardInterrupt", ""))],
    )
    assert (status.reason, status.message) == ("DeadlineExceeded", "too long")


def test_retries_count_attempts_and_latest_pod_wins() -> None:
    pods = [
        pod("Failed", "2025-01-01T00:00:01Z", termination_message=err("E", "1")),
        pod("Failed", "2025-01-01T00:00:02Z", termination_message=err("E", "2")),
        pod("Succeeded", "2025-01-01T00:00:03Z", termination_message=ok("third")),
    ]
    status = derive(JobSummary("j", succeeded=1, failed=2, complete=True), pods)
    assert (status.phase, status.attempts, status.result) == (Phase.COMPLETED, 3, "third")
    failing = derive(JobSummary("j", failed=2, failed_reason="BackoffLimitExceeded"), pods[:2])
    assert failing.message == "E: 2"
    assert failing.attempts == 2


@pytest.mark.parametrize(
    "failure",
    [
        Failure("NoDeployments", "flow 'f' has no deployments"),
        Failure("AmbiguousTag", "tag 'b' routes to versions 1, 2"),
        Failure("InvalidInputs", "input 'depth': 'x' is not of type 'integer'"),
    ],
)
def test_failures_end_at_once_without_a_job(failure: Failure) -> None:
    status = derive(None, outcome=failure)
    assert status.phase == Phase.FAILED
    assert condition(status, "Resolved") == ("False", failure.reason)
    assert condition(status, "Succeeded") == ("False", failure.reason)
    assert (status.reason, status.message) == (failure.reason, failure.message)
    assert status.job_name is None and status.resolved is None
    assert status.completion_time == NOW


def test_cancel_before_and_during_the_run() -> None:
    cancel = FlowInvocationSpec(flow="f", cancel_requested=True)
    before = derive(None, spec=cancel, outcome=None)
    assert (before.phase, before.reason) == (Phase.CANCELLED, "Cancelled")
    during = derive(JobSummary("j", active=1), [pod("Running")], spec=cancel)
    assert during.phase == Phase.CANCELLED
    assert condition(during, "Succeeded") == ("False", "Cancelled")
    assert needs_job_deleted(during, JobSummary("j", active=1))
    # A run that already finished is not turned into a cancel.
    finished = derive(
        JobSummary("j", succeeded=1, complete=True),
        [pod("Succeeded", termination_message=ok(1))],
        spec=cancel,
    )
    assert finished.phase == Phase.COMPLETED


def test_waiting_is_pending_until_it_resolves_or_fails() -> None:
    waiting = derive(None, outcome=Waiting("not resolvable yet, retrying: no default route"))
    assert waiting.phase == Phase.PENDING and waiting.reason is None
    assert condition(waiting, "Resolved") == ("False", "Waiting")
    assert condition(waiting, "Succeeded") == ("Unknown", "Pending")
    assert waiting.message == "not resolvable yet, retrying: no default route"
    # Waiting again changes nothing (no status write per retry) ...
    assert derive(None, previous=waiting, outcome=Waiting(waiting.message or "")) == waiting
    # ... and once resolved, the run goes on as any other.
    resolved = derive(JobSummary("j", active=1), [pod("Running")], previous=waiting)
    assert condition(resolved, "Resolved") == ("True", "Resolved")
    assert resolved.phase == Phase.RUNNING and resolved.message is None


def test_unresolved_without_cancel_is_pending() -> None:
    assert derive(None, outcome=None).phase == Phase.PENDING


def test_job_deleted_under_a_running_invocation() -> None:
    running = derive(JobSummary("j", active=1), [pod("Running")])
    gone = derive(None, previous=running)
    assert (gone.phase, gone.reason) == (Phase.FAILED, "JobDeleted")


def test_finished_status_is_frozen_and_rederivation_is_stable() -> None:
    job = JobSummary("j", succeeded=1, complete=True)
    pods = [pod("Succeeded", termination_message=ok(1))]
    done = derive(job, pods)
    assert derive(None, previous=done, outcome=Failure("X", "y")) is done
    running = derive(JobSummary("j", active=1), [pod("Running", started_at="t1")])
    again = derive_invocation_status(
        SPEC,
        running,
        CHAIN,
        JobSummary("j", active=1),
        [pod("Running", started_at="t1")],
        "2025-01-01T00:09:00Z",
        1,
    )
    assert again == running


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (None, None),
        ("", None),
        ("not json", None),
        ("[1]", None),
        ('{"ok": "yes"}', None),
        (ok([1, 2]), (True, [1, 2], None)),
        (err("ValueError", "m"), (False, None, "ValueError")),
        # The pod's code may write the message itself: what no status could hold is none.
        ('{"ok": true, "result": NaN}', None),
        ('{"ok": true, "result": ' + "[" * 2000 + "]" * 2000 + "}", None),
        ('{"ok": true, "result": ' + "[" * 65 + "]" * 65 + "}", None),
        (ok("<b>\x1b[2J</b>"), (True, "<b>\x1b[2J</b>", None)),
        (ok('{"ok": false}'), (True, '{"ok": false}', None)),
    ],
)
def test_parse_termination_message(
    message: str | None, expected: tuple[bool, Any, str | None] | None
) -> None:
    outcome = parse_termination_message(message)
    if expected is None:
        assert outcome is None
    else:
        assert outcome is not None
        assert (outcome.ok, outcome.result, outcome.type) == expected


def test_summaries_from_raw_objects() -> None:
    job = summarize_job(
        {
            "metadata": {"name": "j"},
            "status": {
                "active": 1,
                "failed": 2,
                "startTime": "s",
                "conditions": [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "DeadlineExceeded",
                        "message": "m",
                    },
                    {"type": "Complete", "status": "False"},
                ],
            },
        }
    )
    assert job == JobSummary(
        "j",
        active=1,
        failed=2,
        start_time="s",
        failed_reason="DeadlineExceeded",
        failed_message="m",
    )
    summary = summarize_pod(
        {
            "metadata": {"name": "p", "creationTimestamp": "c"},
            "status": {
                "phase": "Failed",
                "containerStatuses": [
                    {
                        "state": {
                            "terminated": {
                                "exitCode": 1,
                                "message": "x",
                                "startedAt": "a",
                                "finishedAt": "b",
                            }
                        }
                    }
                ],
            },
        }
    )
    assert summary == PodSummary("p", "c", "Failed", "a", "b", 1, "x")
    waiting = summarize_pod(
        {
            "metadata": {"name": "p"},
            "status": {"containerStatuses": [{"state": {"waiting": {"reason": "ImageNotMapped"}}}]},
        }
    )
    assert (waiting.phase, waiting.waiting_reason) == ("Pending", "ImageNotMapped")


@pytest.mark.parametrize(
    "result",
    [
        "<script>alert(1)</script>",
        "\x1b]0;pwned\x07\x1b[2J\r\x00\x9b\u202e",
        '{"ok": false, "type": "Forged"}',
        {"a": [{"b": ["</div>", None, -0.0, 10**30]}]},
    ],
    ids=["html", "ansi", "json-looking", "nested"],
)
def test_a_hostile_result_is_stored_as_data(result: Any) -> None:
    done = pod("Succeeded", exit_code=0, termination_message=ok(result))
    status = derive(JobSummary(name="j", complete=True), [done])
    assert (status.phase, status.result) == (Phase.COMPLETED, result)
    wire = status.wire()
    assert json.loads(json.dumps(wire, allow_nan=False))["result"] == result


def test_a_result_over_the_message_limit_fails_with_its_size() -> None:
    failed = pod(
        "Failed",
        exit_code=1,
        termination_message=err("ResultTooLarge", "the result is 9000 bytes as JSON"),
    )
    status = derive(JobSummary(name="j", failed=1, failed_reason="BackoffLimitExceeded"), [failed])
    assert (status.phase, status.reason) == (Phase.FAILED, "ResultTooLarge")
    assert status.result is None and "9000 bytes" in (status.message or "")


def test_a_forged_unparseable_result_completes_without_one() -> None:
    forged = '{"ok": true, "result": ' + "[" * 2000 + "]" * 2000 + "}"
    done = pod("Succeeded", exit_code=0, termination_message=forged)
    status = derive(JobSummary(name="j", complete=True), [done])
    assert (status.phase, status.result, status.message) == (
        Phase.COMPLETED,
        None,
        "the run left no result",
    )
