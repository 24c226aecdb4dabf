"""Helpers of the chart, RBAC and GitOps tests: the pinned `helm` built by
`cluster/build.sh`, a tiny flow shipped as a source ConfigMap, and API reads with the
pinned `kubectl` of `support`.

The pinned binaries are used rather than whatever is on PATH, so the tests run the
same helm/kubectl in every checkout and in CI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yaml
from kitaru.core.jobs import source_key, source_sha256
from kitaru.core.manifests import build_deployment, build_invocation
from kitaru.core.models import SourceSnapshot
from kubernetes import client, config
from support import (
    KUBECONFIG,
    REPO,
    TEST_NAMESPACE_LABELS,
    bin_dir,
    get,
    kubectl,
    node_images,
    runner_image,
    wait_for,
)

CHART = REPO / "charts" / "kitaru-operator"
INSTANCE = "app.kubernetes.io/instance"


def helm(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the pinned helm against the local cluster; output is captured as text."""
    env = {**os.environ, "KUBECONFIG": str(KUBECONFIG)}
    # helm keeps caches and repository config under these; keep them out of $HOME.
    env.setdefault("HELM_CACHE_HOME", "/tmp/kitaru-helm/cache")
    env.setdefault("HELM_CONFIG_HOME", "/tmp/kitaru-helm/config")
    env.setdefault("HELM_DATA_HOME", "/tmp/kitaru-helm/data")
    proc = subprocess.run(
        [str(bin_dir() / "helm"), *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )
    return proc


def kubectl_json(*args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json").stdout)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@contextmanager
def new_namespace(prefix: str) -> Iterator[str]:
    """A namespace like the `namespace` fixture's (Pod Security `restricted`) for a
    whole module's tests; deleted afterwards without waiting."""
    name = unique(prefix)
    kubectl("create", "namespace", name)
    kubectl("label", "namespace", name, *(f"{k}={v}" for k, v in TEST_NAMESPACE_LABELS.items()))
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false")


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            found: dict[str, Any] = cond
            return found
    return None


# --- a tiny flow, shipped as a source ConfigMap --------------------------------

HELLO_SOURCE = b'''\
"""A stdlib-only flow: the runner imports it from the mounted source ConfigMap."""


def hello(name: str = "world") -> str:
    return f"hello {name}"
'''


def hello_objects(namespace: str, version: int = 1) -> list[dict[str, Any]]:
    """The source ConfigMap and FlowDeployment `hello-v<version>` of the tiny flow."""
    files = {"hello.py": HELLO_SOURCE}
    cm_name = f"hello-source-v{version}"
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": cm_name, "namespace": namespace},
        "immutable": True,
        "data": {source_key(path): data.decode() for path, data in files.items()},
    }
    deployment = build_deployment(
        "hello",
        version,
        entrypoint="hello:hello",
        image=runner_image(),
        source=SourceSnapshot(config_map=cm_name, sha256=source_sha256(files), files=sorted(files)),
        inputs={"name": "world"},
        input_schema={
            "type": "object",
            "properties": {"name": {"type": "string", "default": "world"}},
        },
    )
    return [configmap, in_namespace(deployment, namespace)]


def invocation(namespace: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    return in_namespace(build_invocation("hello", name=name, inputs=inputs), namespace)


def in_namespace(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    """`obj` in `namespace`: `apply` names no namespace, each object names its own."""
    return {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}


def apply(*objects: dict[str, Any]) -> None:
    kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}),
    )


def wait_finished(namespace: str, name: str, timeout: float = 180) -> dict[str, Any]:
    """The invocation once its phase is final (Completed, Failed or Cancelled)."""

    def finished() -> dict[str, Any] | None:
        obj = get("flowinvocation", name, namespace)
        phase = ((obj or {}).get("status") or {}).get("phase")
        return obj if phase in ("Completed", "Failed", "Cancelled") else None

    return wait_for(
        finished, timeout=timeout, interval=0.5, message=f"invocation {namespace}/{name} to finish"
    )


# --- RBAC: ServiceAccounts bound to the chart's roles, and their real tokens ----------


def bind(namespace: str, service_account: str, cluster_role: str) -> None:
    """A new ServiceAccount bound to the ClusterRole in `namespace` with a RoleBinding."""
    kubectl("create", "serviceaccount", service_account, "-n", namespace)
    kubectl(
        "create",
        "rolebinding",
        f"{service_account}-binding",
        "-n",
        namespace,
        f"--clusterrole={cluster_role}",
        f"--serviceaccount={namespace}:{service_account}",
    )


def token_of(namespace: str, service_account: str) -> str:
    """A fresh short-lived token of the ServiceAccount (TokenRequest API)."""
    return kubectl(
        "create", "token", service_account, "-n", namespace, "--duration=10m"
    ).stdout.strip()


def token_client(token: str) -> client.ApiClient:
    """An API client of the local cluster authenticated only by `token`."""
    admin = client.Configuration()
    config.load_kube_config(config_file=str(KUBECONFIG), client_configuration=admin)
    conf = client.Configuration()
    conf.host = admin.host
    conf.ssl_ca_cert = admin.ssl_ca_cert
    conf.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(conf)


def render_user_roles(prefix: str) -> str:
    """The chart's producer/consumer/viewer ClusterRoles, named `<prefix>-<role>`."""
    return helm(
        "template",
        prefix,
        str(CHART),
        "--show-only",
        "templates/rbac-user-roles.yaml",
        "--set",
        f"rbac.userRoles.namePrefix={prefix}",
    ).stdout


def render_operator_rbac(release: str, namespace: str) -> str:
    """The chart's operator ServiceAccount and RBAC for a release in `namespace` that
    watches it (the chart's default): `<release>-kitaru-operator`."""
    return helm(
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac-operator.yaml",
    ).stdout


def server_and_ca() -> tuple[str, str]:
    """The local cluster's API server URL and CA file, as its kubeconfig names them."""
    admin = client.Configuration()
    config.load_kube_config(config_file=str(KUBECONFIG), client_configuration=admin)
    return admin.host, admin.ssl_ca_cert


def kitaru_as(namespace: str, token: str) -> Any:
    """The SDK (`KitaruClient`) authenticated only by `token`, the namespace as project."""
    from kitaru.client import KitaruClient
    from kitaru.client.connection import Connection, Setting

    server, ca = server_and_ca()
    return KitaruClient(
        Connection(
            server=Setting(server, "test"),
            token=Setting(token, "test"),
            project=Setting(namespace, "test"),
            ca_file=Setting(ca, "test"),
            service_account=Setting("kitaru-client", "test"),
        )
    )


# --- releases of the chart on the local cluster ---------------------------------------


def image_values() -> list[str]:
    """The operator image the node has, pinned by digest."""
    operator = node_images()["operator"]
    repository = operator["ref"].rsplit(":", 1)[0]
    return [
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.digest={operator['digest']}",
    ]


def ready(pod: dict[str, Any] | None) -> bool:
    conditions = ((pod or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


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


@contextmanager
def release_in(namespace: str) -> Iterator[str]:
    """A fresh release name for `namespace`. On a failed assertion the pods' states and
    the operator's log are printed (pytest shows them with the failure); the release is
    uninstalled in any case, and the namespace's Kitaru objects let go."""
    release = unique("kt")
    try:
        yield release
    except AssertionError:
        selector = f"{INSTANCE}={release}"
        print(
            kubectl("get", "pods,flowroutes,flowinvocations", "-n", namespace, check=False).stdout
        )
        print(kubectl("logs", "-n", namespace, "-l", selector, "--tail=200", check=False).stdout)
        raise
    finally:
        helm("uninstall", release, "--namespace", namespace, check=False)
        drop_finalizers(namespace)


def bootstrap_hello(namespace: str) -> None:
    """The `hello` flow applied; the installed operator bootstraps its `default` route."""
    apply(*hello_objects(namespace))
    wait_for(
        lambda: (
            (condition(get("flowroute", "hello.default", namespace), "Ready") or {}).get("status")
            == "True"
        ),
        timeout=120,
        interval=0.5,
        message="the operator to bootstrap the default route",
    )


def dashboard_identity(release: str, namespace: str, *values: str) -> list[dict[str, Any]]:
    """The chart's dashboard ServiceAccount with its impersonation ClusterRole and
    binding, as `helm template` renders them for `values` (the rest left out)."""
    rendered = helm(
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--show-only",
        "templates/dashboard.yaml",
        *values,
    ).stdout
    kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    return [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] in kinds]


FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+)")


@contextmanager
def port_forward(namespace: str, target: str, port: int) -> Iterator[str]:
    """`kubectl port-forward TARGET :PORT` (the way people reach a ClusterIP Service);
    yields the local URL."""
    env = {**os.environ, "KUBECONFIG": str(KUBECONFIG)}
    proc = subprocess.Popen(
        [str(bin_dir() / "kubectl"), "port-forward", "-n", namespace, target, f":{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = FORWARDING.search(first)
        assert match, (
            f"kubectl port-forward {target}: {first}{proc.stdout.read() if proc.poll() else ''}"
        )
        yield f"http://127.0.0.1:{match.group(1)}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
