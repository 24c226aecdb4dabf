"""The local cluster is real: schemas and CEL, RBAC, Jobs in containers of the runner
image on the node (containerd + runc), garbage collection, the pod network with cluster
DNS and Services, exec and port-forward, securityContext enforcement, in-cluster
clients, and `cluster down` leaving nothing behind."""

from __future__ import annotations

import json
import random
import socket
import ssl
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from support import (
    CLUSTER_DIR,
    KUBECONFIG,
    REPO,
    Cluster,
    bin_dir,
    kubectl,
    runner_image,
    wait_for,
)


def _get_json(*args: str, namespace: str | None = None) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json", namespace=namespace).stdout)


def _job_finished(namespace: str, name: str) -> str | None:
    """`Complete` or `Failed` once the Job has that condition."""
    job = _get_json("job", name, namespace=namespace)
    for cond in job.get("status", {}).get("conditions", []):
        if cond["type"] in ("Complete", "Failed") and cond["status"] == "True":
            return str(cond["type"])
    return None


def _finished_pod(namespace: str, name: str) -> dict[str, Any] | None:
    """The pod's status once its phase is Succeeded or Failed."""
    status: dict[str, Any] = _get_json("pod", name, namespace=namespace)["status"]
    return status if status.get("phase") in ("Succeeded", "Failed") else None


def _job_pods(namespace: str, job: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = _get_json("pods", "-l", f"job-name={job}", namespace=namespace)[
        "items"
    ]
    return items


def _processes_with(text: str) -> list[int]:
    """Live processes whose command line contains `text`."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(int(proc.name))
    return found


# Test namespaces enforce the Pod Security Standard `restricted` (conftest), as a
# production namespace should: every pod here says what it must.
RESTRICTED_POD = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _pod_spec(container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    security = {**RESTRICTED_CONTAINER, **container.get("securityContext", {})}
    return {
        "restartPolicy": "Never",
        "securityContext": RESTRICTED_POD,
        "containers": [{"name": "main", **container, "securityContext": security}],
        **spec,
    }


def _job_manifest(name: str, command: list[str], backoff_limit: int = 0) -> str:
    container = {"image": runner_image(), "command": command}
    return json.dumps(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {"backoffLimit": backoff_limit, "template": {"spec": _pod_spec(container)}},
        }
    )


def _pod(name: str, container: dict[str, Any], **spec: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": _pod_spec(container, **spec),
        }
    )


def _run_pod(namespace: str, name: str, container: dict[str, Any], **spec: Any) -> None:
    kubectl("create", "-f", "-", namespace=namespace, input=_pod(name, container, **spec))


def test_apiserver_is_ready() -> None:
    assert kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    node = _get_json("node", "kitaru-local")
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
    assert ready == "True"


def test_cel_rule_of_a_crd_rejects_a_violating_object(namespace: str) -> None:
    group = f"t{uuid.uuid4().hex[:8]}.test.kitaru.dev"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "min": {"type": "integer"},
                                        "max": {"type": "integer"},
                                    },
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": "self.min <= self.max",
                                            "message": "min must not exceed max",
                                        }
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    kubectl("create", "-f", "-", input=json.dumps(crd))
    try:
        kubectl("wait", "--for=condition=Established", f"crd/widgets.{group}", "--timeout=30s")

        def widget(name: str, low: int, high: int) -> str:
            return json.dumps(
                {
                    "apiVersion": f"{group}/v1",
                    "kind": "Widget",
                    "metadata": {"name": name},
                    "spec": {"min": low, "max": high},
                }
            )

        bad = kubectl(
            "create", "-f", "-", namespace=namespace, input=widget("bad", 5, 1), check=False
        )
        assert bad.returncode != 0
        assert "min must not exceed max" in bad.stderr
        kubectl("create", "-f", "-", namespace=namespace, input=widget("good", 1, 5))
    finally:
        kubectl("delete", "crd", f"widgets.{group}", "--wait=false")


def test_service_account_token_without_permissions_gets_403(
    namespace: str, cluster: Cluster, k8s: kubernetes.client.ApiClient
) -> None:
    kubectl("create", "serviceaccount", "nobody", namespace=namespace)
    token = kubectl("create", "token", "nobody", namespace=namespace).stdout.strip()
    request = urllib.request.Request(
        f"{cluster.api_url}/api/v1/namespaces/{namespace}/pods",
        headers={"Authorization": f"Bearer {token}"},
    )
    ctx = ssl.create_default_context(cafile=k8s.configuration.ssl_ca_cert)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, context=ctx, timeout=10)
    assert err.value.code == 403
    body = err.value.read().decode()
    assert f"system:serviceaccount:{namespace}:nobody" in body  # authenticated, not authorized


def test_job_runs_to_complete_with_its_output(namespace: str) -> None:
    manifest = _job_manifest("hello", ["sh", "-c", "echo hello from the local node"])
    kubectl("create", "-f", "-", namespace=namespace, input=manifest)
    assert wait_for(lambda: _job_finished(namespace, "hello"), timeout=60) == "Complete"
    logs = kubectl("logs", "job/hello", namespace=namespace).stdout
    assert logs == "hello from the local node\n"


def test_failing_command_gives_a_failed_job_with_its_exit_code(namespace: str) -> None:
    manifest = _job_manifest("fail", ["sh", "-c", "exit 3"])
    kubectl("create", "-f", "-", namespace=namespace, input=manifest)
    assert wait_for(lambda: _job_finished(namespace, "fail"), timeout=60) == "Failed"
    (pod,) = _job_pods(namespace, "fail")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert terminated["reason"] == "Error"
    assert pod["status"]["phase"] == "Failed"


def test_backoff_limit_retries_happen(namespace: str) -> None:
    manifest = _job_manifest("retry", ["sh", "-c", "exit 1"], backoff_limit=2)
    kubectl("create", "-f", "-", namespace=namespace, input=manifest)
    # The Job controller waits 10 s, then 20 s, between failed attempts.
    assert wait_for(lambda: _job_finished(namespace, "retry"), timeout=150) == "Failed"
    pods = _job_pods(namespace, "retry")
    assert len(pods) == 3
    assert all(p["status"]["phase"] == "Failed" for p in pods)


def test_deleting_a_job_garbage_collects_its_pods(namespace: str) -> None:
    seconds = random.randint(100_000, 999_999)  # a command line no other process has
    manifest = _job_manifest("sleeper", ["sleep", str(seconds)])
    kubectl("create", "-f", "-", namespace=namespace, input=manifest)
    wait_for(
        lambda: [
            p for p in _job_pods(namespace, "sleeper") if p["status"].get("phase") == "Running"
        ],
        timeout=60,
        message="a running pod",
    )
    assert _processes_with(f"sleep {seconds}")
    kubectl("delete", "job", "sleeper", "--cascade=background", namespace=namespace)
    wait_for(lambda: not _job_pods(namespace, "sleeper"), timeout=60, message="pods gone")
    wait_for(lambda: not _processes_with(f"sleep {seconds}"), timeout=10, message="process gone")


def test_an_image_missing_from_the_node_is_never_pulled(namespace: str) -> None:
    """Nothing leaves the machine: a missing image with pull policy Never waits with
    ErrImageNeverPull."""
    image = "registry.invalid/nothing:1.0"
    _run_pod(namespace, "missing", {"image": image, "imagePullPolicy": "Never"})

    def waiting() -> dict[str, Any] | None:
        statuses = _get_json("pod", "missing", namespace=namespace)["status"].get(
            "containerStatuses", []
        )
        state = statuses[0]["state"].get("waiting", {}) if statuses else {}
        return state if state.get("reason") == "ErrImageNeverPull" else None

    assert image in wait_for(waiting, timeout=60)["message"]


def test_security_context_is_enforced(namespace: str) -> None:
    """runc applies the pod's securityContext: the image's numeric user, a read-only root
    file system, no capabilities. A pod asking for root is refused by Pod Security
    admission in a `restricted` namespace, and beneath admission by the kubelet
    (runAsNonRoot)."""
    script = (
        "id -u; touch /probe 2>/dev/null && echo writable || echo read-only; "
        "grep CapEff /proc/self/status"
    )
    _run_pod(
        namespace,
        "restricted",
        {
            "image": runner_image(),
            "command": ["sh", "-c", script],
            "securityContext": {
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "runAsNonRoot": True,
            },
        },
    )
    status = wait_for(lambda: _finished_pod(namespace, "restricted"), timeout=60)
    assert status["phase"] == "Succeeded"
    lines = kubectl("logs", "restricted", namespace=namespace).stdout.split("\n")
    assert lines[:2] == ["10001", "read-only"]
    assert lines[2].split() == ["CapEff:", "0000000000000000"]

    as_root = {"image": runner_image(), "command": ["true"], "securityContext": {"runAsUser": 0}}
    refused_at_admission = kubectl(
        "create", "-f", "-", namespace=namespace, input=_pod("as-root", as_root), check=False
    )
    assert refused_at_admission.returncode != 0
    assert 'violates PodSecurity "restricted:latest": runAsUser=0' in refused_at_admission.stderr

    # `baseline` allows root, so the pod reaches the kubelet, whose runAsNonRoot check is
    # what is under test here.
    kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=baseline",
        "--overwrite",
    )
    _run_pod(namespace, "as-root", as_root)

    def refused() -> str | None:
        statuses = _get_json("pod", "as-root", namespace=namespace)["status"].get(
            "containerStatuses", []
        )
        waiting = statuses[0]["state"].get("waiting", {}) if statuses else {}
        return (
            waiting.get("message")
            if waiting.get("reason") == "CreateContainerConfigError"
            else None
        )

    assert "non-root" in wait_for(refused, timeout=60)


def test_services_dns_exec_and_port_forward(namespace: str) -> None:
    """A Service resolves through cluster DNS and routes through kube-proxy to a pod on the
    bridge; `kubectl exec` and `kubectl port-forward` reach the pod through the kubelet."""
    _run_pod(
        namespace,
        "web",
        {
            "image": runner_image(),
            "command": ["python", "-m", "http.server", "8000", "--directory", "/opt/kitaru"],
            "ports": [{"containerPort": 8000}],
            "readinessProbe": {"tcpSocket": {"port": 8000}, "periodSeconds": 1},
        },
    )
    kubectl("label", "pod", "web", "app=web", namespace=namespace)
    kubectl("create", "service", "clusterip", "web", "--tcp=80:8000", namespace=namespace)
    kubectl("wait", "--for=condition=Ready", "pod/web", "--timeout=60s", namespace=namespace)

    fetch = (
        "import socket, urllib.request; "
        f"print(socket.gethostbyname('web.{namespace}.svc.cluster.local')); "
        "print(urllib.request.urlopen('http://web/', timeout=5).status)"
    )
    _run_pod(namespace, "client", {"image": runner_image(), "command": ["python", "-c", fetch]})
    status = wait_for(lambda: _finished_pod(namespace, "client"), timeout=60)
    logs = kubectl("logs", "client", namespace=namespace).stdout.split()
    assert status["phase"] == "Succeeded", logs
    service_ip = _get_json("service", "web", namespace=namespace)["spec"]["clusterIP"]
    assert logs == [service_ip, "200"]

    exec_out = kubectl("exec", "web", "--", "sh", "-c", "id -u; hostname", namespace=namespace)
    assert exec_out.stdout.split() == ["10001", "web"]

    port = _free_port()
    forward = subprocess.Popen(
        [*_kubectl_argv(namespace), "port-forward", "pod/web", f"{port}:8000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        body = wait_for(lambda: _http_get(f"http://127.0.0.1:{port}/"), timeout=30)
        assert "bin/" in body
    finally:
        forward.terminate()
        forward.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _http_get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            body: bytes = response.read()
            return body.decode()
    except OSError:
        return None


def _kubectl_argv(namespace: str) -> list[str]:
    return [str(bin_dir() / "kubectl"), f"--kubeconfig={KUBECONFIG}", f"--namespace={namespace}"]


IN_CLUSTER_SCRIPT = textwrap.dedent(
    """
    import json, os, ssl, urllib.request
    # What a client's in-cluster configuration does: the Service's address from the
    # environment, the projected token and CA.
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
    ns = open(f"{sa}/namespace").read()
    request = urllib.request.Request(
        f"https://{host}:{port}/api/v1/namespaces/{ns}/configmaps",
        headers={"Authorization": "Bearer " + open(f"{sa}/token").read()},
    )
    ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
    items = json.load(urllib.request.urlopen(request, context=ctx, timeout=10))["items"]
    names = sorted(c["metadata"]["name"] for c in items)
    result = {
        "configmaps": names,
        "pod": os.environ["POD_NAME"],
        "greeting": open("/etc/kitaru-test/greeting").read(),
        "cwd": os.getcwd(),
    }
    print("in-cluster ok")
    with open("/dev/termination-log", "w") as f:
        json.dump(result, f)
    """
)


def test_pod_calls_the_api_server_in_cluster_style(namespace: str) -> None:
    kubectl("create", "configmap", "greeting", "--from-literal=greeting=hi", namespace=namespace)
    kubectl(
        "create", "role", "cm-reader", "--verb=list", "--resource=configmaps", namespace=namespace
    )
    kubectl(
        "create",
        "rolebinding",
        "cm-reader",
        "--role=cm-reader",
        f"--serviceaccount={namespace}:default",
        namespace=namespace,
    )
    _run_pod(
        namespace,
        "in-cluster",
        {
            "image": runner_image(),
            "command": ["python", "-c", IN_CLUSTER_SCRIPT],
            "workingDir": "/workspace/kitaru",
            "env": [
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
            ],
            "volumeMounts": [{"name": "greeting", "mountPath": "/etc/kitaru-test"}],
        },
        volumes=[{"name": "greeting", "configMap": {"name": "greeting"}}],
    )
    status = wait_for(lambda: _finished_pod(namespace, "in-cluster"), timeout=60)
    logs = kubectl("logs", "in-cluster", namespace=namespace).stdout
    assert status["phase"] == "Succeeded", logs
    assert logs == "in-cluster ok\n"
    message = status["containerStatuses"][0]["state"]["terminated"]["message"]
    assert json.loads(message) == {
        "configmaps": ["greeting", "kube-root-ca.crt"],
        "pod": "in-cluster",
        "greeting": "hi",
        "cwd": "/workspace/kitaru",
    }
    # The pod had its own root file system: nothing appeared on the host.
    assert not Path("/etc/kitaru-test").exists()
    assert not Path("/workspace/kitaru").exists()


def test_up_on_a_running_cluster_keeps_its_images_current() -> None:
    """`up` while up (what `make test` does) rebuilds and imports only changed images:
    with the checkout unchanged, the recorded images stay exactly the same."""
    images_file = CLUSTER_DIR / "images.json"
    before = images_file.read_text()
    again = subprocess.run(
        [sys.executable, "-m", "kitaru_localnode.cluster", "up", f"--dir={CLUSTER_DIR}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already up" in again.stdout
    assert images_file.read_text() == before


def test_cluster_down_leaves_no_process(tmp_path: Path) -> None:
    """A throwaway second cluster (own state dir and ports), so the session's survives.
    The machine has one node, the session cluster's: this one is the control plane alone."""
    state = tmp_path / "cluster"

    def cluster(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kitaru_localnode.cluster", *args, f"--dir={state}"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
        )

    refused = cluster("up")
    assert refused.returncode == 1
    assert "this machine's node belongs to the cluster in" in refused.stderr
    assert "--no-node" in refused.stderr
    try:
        up = cluster("up", "--no-node")
        assert up.returncode == 0, up.stdout + up.stderr
        assert cluster("status").returncode == 0
        assert "already up" in cluster("up", "--no-node").stdout
        kubeconfig = state / "kubeconfig"
        assert "127.0.0.1" in kubeconfig.read_text()  # without a node, loopback only
        kubectl("create", "namespace", "probe", kubeconfig=kubeconfig)
        recorded = [int(p.read_text().split()[0]) for p in (state / "pids").glob("*.pid")]
        assert len(recorded) == 4  # etcd, API server, controller manager, scheduler
    finally:
        down = cluster("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [pid for pid in recorded if Path(f"/proc/{pid}").exists() and not _is_zombie(pid)]
    assert not _processes_with(str(state))
    assert not list((state / "pids").glob("*.pid"))
    assert cluster("status").returncode == 1


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"
