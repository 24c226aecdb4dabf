"""The Helm chart with the real, pinned `helm` against the local cluster.

The lifecycle test installs the chart into a fresh namespace, where the node agent runs
the Deployment's pod (image ghcr.io/kitaru-k8s/operator -> `python -m kitaru_operator`),
so a FlowInvocation completes through the operator that Helm installed; then it
upgrades and uninstalls the release and checks that nothing of it is left.
Pods run as local processes on the host network, so each release gets free ports.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from chart_support import (
    CHART,
    apply,
    condition,
    free_port,
    get,
    hello_objects,
    helm,
    invocation,
    kubectl,
    kubectl_json,
    unique,
    wait_finished,
)
from support import wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

INSTANCE = "app.kubernetes.io/instance"
# Every kind the chart creates (ReplicaSets and pods come from its Deployment).
RELEASE_KINDS = (
    "deployments,replicasets,pods,serviceaccounts,services,roles,rolebindings,"
    "clusterroles,clusterrolebindings,validatingadmissionpolicies,"
    "validatingadmissionpolicybindings"
)
CRDS = ("flowdeployments.kitaru.dev", "flowroutes.kitaru.dev", "flowinvocations.kitaru.dev")


def release_objects(release: str) -> list[str]:
    out = kubectl("get", RELEASE_KINDS, "-A", "-l", f"{INSTANCE}={release}", "-o", "name")
    return out.stdout.split()


def http_status(url: str) -> int | None:
    """The HTTP status of GET url, or None when nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def http_body(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
        return body.decode()


def operator_pods(namespace: str, release: str) -> list[dict[str, Any]]:
    pods = kubectl_json("get", "pods", "-n", namespace, "-l", f"{INSTANCE}={release}")
    items: list[dict[str, Any]] = pods["items"]
    return items


def running_pod(namespace: str, release: str) -> dict[str, Any] | None:
    """The single running operator pod of the release (None while there is not exactly one)."""
    pods = [
        p for p in operator_pods(namespace, release) if not p["metadata"].get("deletionTimestamp")
    ]
    if len(pods) == 1 and pods[0]["status"].get("phase") == "Running":
        return pods[0]
    return None


def ports_values(metrics_port: int, health_port: int) -> list[str]:
    return ["--set", f"metrics.port={metrics_port}", "--set", f"liveness.port={health_port}"]


def drop_finalizers(namespace: str) -> None:
    """Once no operator watches the namespace, let its Kitaru objects go with it."""
    names = kubectl(
        "get", "flowinvocations,flowroutes,flowdeployments", "-n", namespace, "-o", "name"
    ).stdout.split()
    for name in names:
        kubectl(
            "patch",
            name,
            "-n",
            namespace,
            "--type=merge",
            "-p",
            json.dumps({"metadata": {"finalizers": None}}),
            check=False,
        )


def invoke_and_wait(namespace: str, name: str, who: str) -> dict[str, Any]:
    apply(invocation(namespace, name, {"name": who}))
    return wait_finished(namespace, name)


def test_chart_lints() -> None:
    helm("lint", "--strict", str(CHART))
    helm("lint", "--strict", str(CHART), "--set", "watch.allNamespaces=true")
    helm("lint", "--strict", str(CHART), "--set", "watch.namespaces={team-a,team-b}")


def test_values_schema_rejects_bad_values() -> None:
    bad = helm("template", "x", str(CHART), "--set", "image.pullPolicy=Sometimes", check=False)
    assert bad.returncode != 0
    assert "pullPolicy" in bad.stderr
    unknown = helm("template", "x", str(CHART), "--set", "replica=2", check=False)
    assert unknown.returncode != 0
    assert "replica" in unknown.stderr


@pytest.mark.cluster
@pytest.mark.parametrize(
    "values",
    [
        [],
        ["--set", "watch.allNamespaces=true"],
        ["--set", "rbac.userRoles.aggregate=false", "--set", "admission.enabled=false"],
    ],
    ids=["defaults", "all-namespaces", "no-aggregation-no-admission"],
)
def test_template_is_accepted_by_the_api_server(
    cluster: Any, namespace: str, values: list[str]
) -> None:
    rendered = helm(
        "template",
        unique("kt-dry"),
        str(CHART),
        "--namespace",
        namespace,
        "--include-crds",
        *values,
    ).stdout
    result = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=rendered)
    assert "deployment.apps/" in result.stdout
    assert "(server dry run)" in result.stdout


@pytest.mark.cluster
def test_install_run_upgrade_uninstall(cluster: Any, namespace: str) -> None:
    release = unique("kt")
    metrics_port, health_port = free_port(), free_port()
    try:
        installed = helm(
            "install",
            release,
            str(CHART),
            "--namespace",
            namespace,
            *ports_values(metrics_port, health_port),
        )
        # NOTES.txt tells how to grant the release's roles.
        assert f"--clusterrole={release}-consumer" in installed.stdout

        # The node agent runs the chart's pod: kopf answers on the liveness port the
        # chart passed in --liveness, and the operator serves Prometheus metrics.
        wait_for(
            lambda: running_pod(namespace, release),
            timeout=120,
            interval=0.5,
            message="the operator pod to run",
        )
        health = f"http://127.0.0.1:{health_port}/healthz"
        wait_for(
            lambda: http_status(health) == 200,
            timeout=90,
            interval=0.5,
            message="kopf's liveness endpoint",
        )
        metrics = http_body(f"http://127.0.0.1:{metrics_port}/metrics")
        assert "# TYPE" in metrics

        deployment = kubectl_json(
            "get", "deployment", "-n", namespace, "-l", f"{INSTANCE}={release}"
        )
        (operator,) = deployment["items"]
        assert operator["spec"]["replicas"] == 1
        assert operator["spec"]["strategy"]["type"] == "RollingUpdate"

        # A flow through the installed operator: it bootstraps `default`, runs the Job.
        apply(*hello_objects(namespace))
        wait_for(
            lambda: (
                (condition(get("flowroute", "hello.default", namespace), "Ready") or {}).get(
                    "status"
                )
                == "True"
            ),
            timeout=120,
            interval=0.5,
            message="the operator to bootstrap the default route",
        )
        done = invoke_and_wait(namespace, "hello-through-helm", "helm")
        assert done["status"]["phase"] == "Completed", done["status"]
        assert done["status"]["result"] == "hello helm"

        # Upgrade: new ports change the pod template; the new pod takes over the Lease.
        old_pod = running_pod(namespace, release)
        assert old_pod is not None
        new_metrics, new_health = free_port(), free_port()
        helm(
            "upgrade",
            release,
            str(CHART),
            "--namespace",
            namespace,
            *ports_values(new_metrics, new_health),
        )
        status = json.loads(helm("status", release, "-n", namespace, "-o", "json").stdout)
        assert status["version"] == 2
        assert status["info"]["status"] == "deployed"

        def replaced() -> dict[str, Any] | None:
            pod = running_pod(namespace, release)
            if pod and pod["metadata"]["uid"] != old_pod["metadata"]["uid"]:
                return pod
            return None

        wait_for(replaced, timeout=120, interval=0.5, message="the upgraded operator pod")
        new_health_url = f"http://127.0.0.1:{new_health}/healthz"
        wait_for(
            lambda: http_status(new_health_url) == 200,
            timeout=120,
            interval=0.5,
            message="the upgraded liveness endpoint",
        )
        wait_for(
            lambda: http_status(health) is None,
            timeout=120,
            interval=0.5,
            message="the old operator process to stop",
        )
        done = invoke_and_wait(namespace, "hello-after-upgrade", "upgrade")
        assert done["status"]["phase"] == "Completed", done["status"]
        assert done["status"]["result"] == "hello upgrade"
        assert len(release_objects(release)) > 0

        # Uninstall: nothing of the release is left; the CRDs stay, as Helm does.
        helm("uninstall", release, "--namespace", namespace, "--wait")
        wait_for(
            lambda: not release_objects(release),
            timeout=120,
            interval=0.5,
            message="every object of the release to be gone",
        )
        wait_for(
            lambda: http_status(new_health_url) is None,
            timeout=120,
            interval=0.5,
            message="the operator process to stop",
        )
        for crd in CRDS:
            assert kubectl("get", "crd", crd, check=False).returncode == 0, crd
    except AssertionError:
        # The operator's log and the pods' states, shown by pytest with the failure.
        selector = f"{INSTANCE}={release}"
        print(
            kubectl("get", "pods,flowroutes,flowinvocations", "-n", namespace, check=False).stdout
        )
        print(kubectl("logs", "-n", namespace, "-l", selector, "--tail=200", check=False).stdout)
        raise
    finally:
        helm("uninstall", release, "--namespace", namespace, check=False)
        drop_finalizers(namespace)
