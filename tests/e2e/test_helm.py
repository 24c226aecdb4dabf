"""The Helm chart with the real, pinned `helm` against the local cluster.

The chart is installed as users install a published chart: packaged, pushed to the
local registry as an OCI artifact (`helm push`) and installed from there, pinned by
digest. The lifecycle test installs it into a fresh namespace where Pod Security
Admission enforces `restricted`; the kubelet pulls the operator image (built here from
operator/Dockerfile, pinned by digest) from the registry and runs it under the chart's
securityContext, probes and resources, so a FlowInvocation completes through the
operator that Helm installed, in a container of the runner image. Then it upgrades and
uninstalls the release and checks that nothing of it is left. The chart's dashboard
behind its authenticating proxy is tested in tests/security/test_dashboard_auth.py.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from chart_support import (
    CHART,
    INSTANCE,
    apply,
    bootstrap_hello,
    helm,
    image_values,
    invocation,
    kubectl,
    kubectl_json,
    ready,
    release_in,
    unique,
    wait_finished,
)
from kitaru_localnode.registry import helm_env, push_chart
from support import bin_dir, cluster_env, node_images, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

# Every kind the chart creates (ReplicaSets and pods come from its Deployment).
RELEASE_KINDS = (
    "deployments,replicasets,pods,serviceaccounts,services,roles,rolebindings,"
    "clusterroles,clusterrolebindings,validatingadmissionpolicies,"
    "validatingadmissionpolicybindings"
)
CRDS = ("flowdeployments.kitaru.dev", "flowroutes.kitaru.dev", "flowinvocations.kitaru.dev")


@pytest.fixture(scope="module")
def chart(cluster: Any) -> list[str]:
    """The checkout's chart, pushed to the local registry; the arguments that install
    it from there, pinned by digest."""
    registry = cluster_env()["KITARU_LOCAL_REGISTRY"]
    env = helm_env(Path("/tmp/kitaru-helm"))
    reference = push_chart(bin_dir() / "helm", CHART, registry, env)
    return [reference, "--plain-http"]


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


def assert_flow_runs(namespace: str, name: str, who: str) -> None:
    """An invocation of `hello` completes through the installed operator."""
    apply(invocation(namespace, name, {"name": who}))
    done = wait_finished(namespace, name)
    assert done["status"]["phase"] == "Completed", done["status"]
    assert done["status"]["result"] == f"hello {who}"


def install(namespace: str, release: str, chart: list[str]) -> dict[str, Any]:
    """helm install; returns the operator pod once the kubelet runs it and it is Ready."""
    installed = helm(
        "install",
        release,
        *chart,
        "--namespace",
        namespace,
        *image_values(),
        "--wait",
        "--timeout=180s",
    )
    # NOTES.txt tells how to grant the release's roles.
    assert f"--clusterrole={release}-consumer" in installed.stdout
    pod: dict[str, Any] = wait_for(
        lambda: (p := running_pod(namespace, release)) and ready(p) and p,
        timeout=120,
        interval=0.5,
        message="the operator pod to be Ready",
    )
    return pod


def assert_runs_as_the_chart_says(namespace: str, release: str, pod: dict[str, Any]) -> None:
    """The pinned image, requests, read-only root, metrics on the pod's address; one
    replica, rolling updates."""
    (container,) = pod["spec"]["containers"]
    assert pod["spec"]["containers"][0]["image"].endswith(node_images()["operator"]["digest"])
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    (status,) = pod["status"]["containerStatuses"]
    assert status["imageID"].endswith(node_images()["operator"]["digest"])
    # Prometheus metrics, straight from the pod's address on the node's bridge.
    metrics = http_body(f"http://{pod['status']['podIP']}:8080/metrics")
    assert "# TYPE" in metrics

    deployment = kubectl_json("get", "deployment", "-n", namespace, "-l", f"{INSTANCE}={release}")
    (operator,) = deployment["items"]
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"]["type"] == "RollingUpdate"


def upgrade_ports(namespace: str, release: str, old_pod: dict[str, Any], chart: list[str]) -> None:
    """helm upgrade with new ports, which change the pod template: the new pod starts as
    a standby, takes the Lease over when the old one stops, and serves on the new ports."""
    new_metrics, new_health = 9090, 9091
    helm(
        "upgrade",
        release,
        *chart,
        "--namespace",
        namespace,
        *image_values(),
        *ports_values(new_metrics, new_health),
        "--wait",
        "--timeout=180s",
    )
    status_json = json.loads(helm("status", release, "-n", namespace, "-o", "json").stdout)
    assert status_json["version"] == 2
    assert status_json["info"]["status"] == "deployed"

    old_uid = old_pod["metadata"]["uid"]

    def replaced() -> dict[str, Any] | None:
        new = running_pod(namespace, release)
        return new if ready(new) and new and new["metadata"]["uid"] != old_uid else None

    new_pod = wait_for(replaced, timeout=120, interval=0.5, message="the upgraded pod")
    new_ip = new_pod["status"]["podIP"]
    assert http_status(f"http://{new_ip}:{new_health}/healthz") == 200
    assert "# TYPE" in http_body(f"http://{new_ip}:{new_metrics}/metrics")


def uninstall(namespace: str, release: str) -> None:
    """helm uninstall leaves nothing of the release; the CRDs stay, as Helm does."""
    assert len(release_objects(release)) > 0
    helm("uninstall", release, "--namespace", namespace, "--wait")
    wait_for(
        lambda: not release_objects(release),
        timeout=120,
        interval=0.5,
        message="every object of the release to be gone",
    )
    for crd in CRDS:
        assert kubectl("get", "crd", crd, check=False).returncode == 0, crd


def test_chart_lints() -> None:
    helm("lint", "--strict", str(CHART))
    helm("lint", "--strict", str(CHART), "--set", "watch.allNamespaces=true")
    helm("lint", "--strict", str(CHART), "--set", "watch.namespaces={team-a,team-b}")
    helm("lint", "--strict", str(CHART), "--set", "store.deploy=true")


def test_values_schema_rejects_bad_values() -> None:
    bad = helm("template", "x", str(CHART), "--set", "image.pullPolicy=Sometimes", check=False)
    assert bad.returncode != 0
    assert "pullPolicy" in bad.stderr
    unknown = helm("template", "x", str(CHART), "--set", "replica=2", check=False)
    assert unknown.returncode != 0
    assert "replica" in unknown.stderr


DASHBOARD = ["--set", "ui.enabled=true", "--set", "ui.auth.users={alice,bob}"]


@pytest.mark.cluster
@pytest.mark.parametrize(
    "values",
    [
        [],
        ["--set", "watch.allNamespaces=true"],
        ["--set", "rbac.userRoles.aggregate=false", "--set", "admission.enabled=false"],
        [*DASHBOARD, "--set", "ui.auth.sidecar.secretName=proxy-settings"],
        [
            *DASHBOARD,
            "--set",
            "ui.auth.mode=external",
            "--set",
            "ui.auth.external.secretName=proxy-secret",
            "--set-json",
            'ui.networkPolicy.from=[{"podSelector": {"matchLabels": {"app": "auth-proxy"}}}]',
        ],
        ["--set", "store.deploy=true"],
    ],
    ids=[
        "defaults",
        "all-namespaces",
        "no-aggregation-no-admission",
        "dashboard-sidecar",
        "dashboard-external",
        "store",
    ],
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
def test_install_run_upgrade_uninstall(cluster: Any, namespace: str, chart: list[str]) -> None:
    # The namespace enforces Pod Security `restricted` (conftest).
    with release_in(namespace) as release:
        pod = install(namespace, release, chart)
        assert_runs_as_the_chart_says(namespace, release, pod)
        # A flow through the installed operator: it bootstraps `default`, runs the Job in
        # a non-root container of the runner image with the source ConfigMap read-only.
        bootstrap_hello(namespace)
        assert_flow_runs(namespace, "hello-through-helm", "helm")
        upgrade_ports(namespace, release, pod, chart)
        assert_flow_runs(namespace, "hello-after-upgrade", "upgrade")
        uninstall(namespace, release)
