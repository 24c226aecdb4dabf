"""Invocations end to end: Jobs really run the flows in tests/e2e/flows through the
local node, shipped as a source ConfigMap and checked against its sha256. (A burst
dispatched exactly once across operator kills is tests/api/test_dispatch_under_kills.py:
dispatch needs no node; runs completing across kills are tests/chaos/test_faults.py.)"""

from __future__ import annotations

import json
from typing import Any

import kubernetes
import pytest
from flow_support import GROUP, VERSION, Kitaru, reason
from support import kubectl, runner_image, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")


@pytest.fixture
def kitaru(k8s: kubernetes.client.ApiClient, namespace: str) -> Kitaru:
    client = Kitaru(k8s, namespace)
    client.ship_flows()
    return client


def test_inputs_defaults_override_and_validation(running_operator: Any, kitaru: Kitaru) -> None:
    kitaru.deploy("research_agent", 1, "research_agent", {"topic": "durable execution"})
    kitaru.wait_default("research_agent")

    default = kitaru.wait(kitaru.invoke("research_agent"))
    assert default["phase"] == "Completed", default
    assert default["result"] == {
        "summary": "durable execution researched to depth 1",
        "topic": "durable execution",
        "depth": 1,
    }
    chain = default["resolved"]
    assert (chain["selector"], chain["tag"], chain["version"]) == ("default", "default", 1)
    assert chain["deployment"] == "research-agent-v1" and chain["image"] == runner_image()
    assert kitaru.source is not None and chain["sourceSha256"] == kitaru.source.sha256
    assert len(chain["inputsHash"]) == 64

    override = kitaru.wait(kitaru.invoke("research_agent", inputs={"topic": "serverless routing"}))
    assert override["result"]["topic"] == "serverless routing"

    name = kitaru.invoke("research_agent", inputs={"depth": "x"})
    invalid = kitaru.wait(name, timeout=15)
    assert (invalid["phase"], reason(invalid)) == ("Failed", "InvalidInputs")
    assert "depth" in invalid["message"]
    assert not kitaru.job_exists(name)


def test_selectors_and_resolution_errors(running_operator: Any, kitaru: Kitaru) -> None:
    kitaru.deploy("research_agent", 1, "research_agent", {"topic": "one"})
    kitaru.wait_default("research_agent")
    kitaru.deploy("research_agent", 2, "research_agent", {"topic": "two"})
    kitaru.route("research_agent", "canary", 2)
    kitaru.route("research_agent", "benchmark", 1, 2, exclusive=False)

    def version_of(**selector: Any) -> int:
        status = kitaru.wait(kitaru.invoke("research_agent", **selector))
        assert status["phase"] == "Completed", status
        return int(status["resolved"]["version"])

    assert version_of() == 1
    assert version_of(tag="canary") == 2
    assert version_of(version=1) == 1

    failures = {
        "AmbiguousTag": ("research_agent", {"tag": "benchmark"}, "1, 2"),
        "TagNotFound": ("research_agent", {"tag": "nope"}, "nope"),
        "VersionNotFound": ("research_agent", {"version": 9}, "9"),
        "NoDeployments": ("unknown_flow", {}, "unknown_flow"),
    }
    for expected, (flow, selector, needle) in failures.items():
        name = kitaru.invoke(flow, **selector)
        status = kitaru.wait(name, timeout=15)
        assert (status["phase"], reason(status)) == ("Failed", expected), status
        assert needle in status["message"]
        assert not kitaru.job_exists(name)

    # No default route: a deliberate whole-flow delete removes it (and the operator
    # does not bootstrap it again meanwhile). The invocation waits for one until its
    # resolve deadline, then fails with the same message.
    kitaru.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        kitaru.ns,
        "flowroutes",
        "research-agent.default",
        {"metadata": {"annotations": {"kitaru.dev/deleting-flow": "true"}}},
    )
    kitaru.custom.delete_namespaced_custom_object(
        GROUP, VERSION, kitaru.ns, "flowroutes", "research-agent.default"
    )
    status = wait_for(
        lambda: (
            (
                s := kitaru.wait(
                    kitaru.invoke("research_agent", resolve_deadline_seconds=2), timeout=15
                )
            ).get("reason")
            == "NoDefaultRoute"
            and s
        ),
        15,
    )
    assert "--tag or --version" in status["message"]


def test_failure_deadline_and_retries(running_operator: Any, kitaru: Kitaru) -> None:
    kitaru.deploy("raiser", 1, "raiser")
    kitaru.deploy("sleeper", 1, "sleeper")
    # The flaky flow keeps its attempt count in a ConfigMap, with the pod's token: a run
    # gets one only from a ServiceAccount its stack names.
    kitaru.deploy("flaky", 1, "flaky", service_account_name="counter")
    for flow in ("raiser", "sleeper", "flaky"):
        kitaru.wait_default(flow)
    raised = kitaru.invoke("raiser", inputs={"reason": "no luck"})
    late = kitaru.invoke("sleeper", inputs={"seconds": 60}, active_deadline_seconds=3)
    for command in (
        ["create", "serviceaccount", "counter"],
        ["create", "role", "counter", "--verb=get,create,update", "--resource=configmaps"],
        [
            "create",
            "rolebinding",
            "counter",
            "--role=counter",
            f"--serviceaccount={kitaru.ns}:counter",
        ],
    ):
        kubectl(*command, namespace=kitaru.ns)
    flaky = kitaru.invoke("flaky", inputs={"counter": "flaky-counter"}, backoff_limit=2)

    status = kitaru.wait(raised)
    assert (status["phase"], reason(status)) == ("Failed", "FlowFailed")
    assert status["message"] == "RuntimeError: flow failed: no luck"

    status = kitaru.wait(late)
    assert (status["phase"], reason(status)) == ("Failed", "DeadlineExceeded")

    status = kitaru.wait(flaky, timeout=180)
    assert status["phase"] == "Completed", status
    assert status["result"] == {"attempt": 3}
    assert status["attempts"] == 3


def test_cancel_deletes_the_job_and_pod(running_operator: Any, kitaru: Kitaru) -> None:
    kitaru.deploy("sleeper", 1, "sleeper")
    kitaru.wait_default("sleeper")
    name = kitaru.invoke("sleeper", inputs={"seconds": 120})
    kitaru.wait(name, phases=("Running",))
    kitaru.custom.patch_namespaced_custom_object(
        GROUP, VERSION, kitaru.ns, "flowinvocations", name, {"spec": {"cancelRequested": True}}
    )
    status = kitaru.wait(name, timeout=30)
    assert (status["phase"], reason(status)) == ("Cancelled", "Cancelled")
    wait_for(lambda: not kitaru.job_exists(name), 30, message="job deleted")
    wait_for(
        lambda: (
            not kitaru.core.list_namespaced_pod(
                kitaru.ns, label_selector=f"kitaru.dev/invocation={name}"
            ).items
        ),
        60,
        message="pod deleted",
    )


def test_the_operator_runs_each_job_as_the_job_api_says(
    running_operator: Any, kitaru: Kitaru
) -> None:
    """The Job names the operator in spec.managedBy; users see a Job like any other."""
    kitaru.deploy("research_agent", 1, "research_agent", {"topic": "jobs"})
    kitaru.deploy("raiser", 1, "raiser")
    kitaru.wait_default("research_agent")
    kitaru.wait_default("raiser")
    done = kitaru.invoke("research_agent", name="done")
    failed = kitaru.invoke("raiser", name="failed")
    assert kitaru.wait(done, timeout=120)["phase"] == "Completed"
    assert kitaru.wait(failed, timeout=120)["phase"] == "Failed"

    job = json.loads(kubectl("get", "job", done, "-o", "json", namespace=kitaru.ns).stdout)
    assert job["spec"]["managedBy"] == "kitaru.dev/operator"
    status = job["status"]
    assert status["succeeded"] == 1 and status.get("active", 0) == 0
    assert status["startTime"] <= status["completionTime"]
    assert {c["type"] for c in status["conditions"]} == {"SuccessCriteriaMet", "Complete"}
    assert [o["kind"] for o in job["metadata"]["ownerReferences"]] == ["FlowInvocation"]
    kubectl("wait", "--for=condition=complete", f"job/{done}", "--timeout=10s", namespace=kitaru.ns)
    pod = json.loads(kubectl("get", "pod", f"{done}-0", "-o", "json", namespace=kitaru.ns).stdout)
    (owner,) = pod["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Job", done, True)
    assert pod["metadata"]["labels"]["batch.kubernetes.io/job-name"] == done
    # kubectl finds the pod through the Job's own selector.
    logs = kubectl("logs", f"job/{done}", namespace=kitaru.ns).stdout
    assert "kitaru runner: starting flow research_agent" in logs, logs

    job = json.loads(kubectl("get", "job", failed, "-o", "json", namespace=kitaru.ns).stdout)
    conditions = {c["type"]: c for c in job["status"]["conditions"]}
    assert set(conditions) == {"FailureTarget", "Failed"}
    assert conditions["Failed"]["reason"] == "BackoffLimitExceeded"
    assert job["status"]["failed"] == 1 and not job["status"].get("completionTime")
