"""The local cluster is real: schemas and CEL, RBAC, Jobs run through the node agent,
garbage collection, in-cluster clients, and `cluster down` leaving nothing behind."""

from __future__ import annotations

import json
import random
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
from support import REPO, Cluster, kubectl, wait_for


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


def _job_manifest(name: str, script: str, backoff_limit: int) -> str:
    return json.dumps(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {
                "backoffLimit": backoff_limit,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {"name": "main", "image": "busybox", "command": ["sh", "-c", script]}
                        ],
                    }
                },
            },
        }
    )


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
    kubectl(
        "create",
        "job",
        "hello",
        "--image=busybox:1.36",
        "--",
        "sh",
        "-c",
        "echo hello from the local node",
        namespace=namespace,
    )
    assert wait_for(lambda: _job_finished(namespace, "hello"), timeout=60) == "Complete"
    logs = kubectl("logs", "job/hello", namespace=namespace).stdout
    assert logs == "hello from the local node\n"


def test_failing_command_gives_a_failed_job_with_its_exit_code(namespace: str) -> None:
    kubectl("create", "-f", "-", namespace=namespace, input=_job_manifest("fail", "exit 3", 0))
    assert wait_for(lambda: _job_finished(namespace, "fail"), timeout=60) == "Failed"
    (pod,) = _job_pods(namespace, "fail")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert terminated["reason"] == "Error"
    assert pod["status"]["phase"] == "Failed"


def test_backoff_limit_retries_happen(namespace: str) -> None:
    kubectl("create", "-f", "-", namespace=namespace, input=_job_manifest("retry", "exit 1", 2))
    # The Job controller waits 10 s, then 20 s, between failed attempts.
    assert wait_for(lambda: _job_finished(namespace, "retry"), timeout=150) == "Failed"
    pods = _job_pods(namespace, "retry")
    assert len(pods) == 3
    assert all(p["status"]["phase"] == "Failed" for p in pods)


def test_deleting_a_job_garbage_collects_its_pods(namespace: str) -> None:
    seconds = random.randint(100_000, 999_999)  # a command line no other process has
    kubectl(
        "create",
        "job",
        "sleeper",
        "--image=busybox",
        "--",
        "sleep",
        str(seconds),
        namespace=namespace,
    )
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


def test_pod_with_an_unmapped_image_fails_with_a_clear_reason(namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "unmapped"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "registry.invalid/nothing:1.0"}],
        },
    }
    kubectl("create", "-f", "-", namespace=namespace, input=json.dumps(pod))
    status = wait_for(lambda: _finished_pod(namespace, "unmapped"), timeout=60)
    assert status["phase"] == "Failed"
    waiting = status["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "ImageNotMapped"
    assert "registry.invalid/nothing:1.0" in waiting["message"]
    assert "images.yaml" in waiting["message"]


IN_CLUSTER_SCRIPT = textwrap.dedent(
    """
    import json, os
    from kubernetes import client, config
    config.load_incluster_config()
    ns = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
    names = sorted(c.metadata.name for c in client.CoreV1Api().list_namespaced_config_map(ns).items)
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
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "in-cluster"},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [{"name": "greeting", "configMap": {"name": "greeting"}}],
            "containers": [
                {
                    "name": "main",
                    "image": "ghcr.io/kitaru-k8s/runner:dev",
                    "command": ["python", "-c", IN_CLUSTER_SCRIPT],
                    "workingDir": "/workspace/kitaru",
                    "env": [
                        {
                            "name": "POD_NAME",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                        }
                    ],
                    "volumeMounts": [{"name": "greeting", "mountPath": "/etc/kitaru-test"}],
                }
            ],
        },
    }
    kubectl("create", "-f", "-", namespace=namespace, input=json.dumps(pod))
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
    # The mounts were private to the pod: nothing appeared on the host.
    assert not Path("/etc/kitaru-test").exists()
    assert not Path("/workspace/kitaru").exists()


def test_cluster_down_leaves_no_process(tmp_path: Path) -> None:
    """A throwaway second cluster (own state dir and ports), so the session's survives."""
    state = tmp_path / "cluster"

    def cluster(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kitaru_localnode.cluster", *args, f"--dir={state}"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
        )

    try:
        up = cluster("up")
        assert up.returncode == 0, up.stdout + up.stderr
        assert cluster("status").returncode == 0
        assert "already up" in cluster("up").stdout
        seconds = random.randint(100_000, 999_999)
        kubeconfig = state / "kubeconfig"
        kubectl(
            "run", "sleeper", "--image=busybox", "--", "sleep", str(seconds), kubeconfig=kubeconfig
        )
        wait_for(lambda: _processes_with(f"sleep {seconds}"), timeout=60, message="pod process")
        recorded = [int(p.read_text().split()[0]) for p in (state / "pids").rglob("*.pid")]
        assert len(recorded) >= 6  # five components and at least one pod process
    finally:
        down = cluster("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [pid for pid in recorded if Path(f"/proc/{pid}").exists() and not _is_zombie(pid)]
    assert not _processes_with(str(state))
    assert not _processes_with(f"sleep {seconds}")
    assert not list((state / "pids").rglob("*.pid"))
    assert cluster("status").returncode == 1


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"
