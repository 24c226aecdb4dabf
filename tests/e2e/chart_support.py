"""Helpers of the chart, RBAC and GitOps tests: the pinned `helm` and `kubectl` built
by `cluster/build.sh`, a tiny flow shipped as a source ConfigMap, and API polling.

The pinned binaries are used rather than whatever is on PATH, so the tests run the
same helm/kubectl in every checkout and in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kitaru.core.jobs import source_key, source_sha256

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kitaru-operator"
KUBECONFIG = REPO / ".cluster" / "kubeconfig"
RUNNER_IMAGE = "ghcr.io/kitaru-k8s/runner:dev"

T = TypeVar("T")


def _versions() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in (REPO / "cluster" / "versions.env").read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


def bin_dir() -> Path:
    """Where `cluster/build.sh` puts the pinned binaries (same rule as the script)."""
    v = _versions()
    cache = os.environ.get("KITARU_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kitaru-k8s"
    )
    key = f"k8s-{v['K8S_VERSION']}-etcd-{v['ETCD_VERSION']}-helm-{v['HELM_VERSION']}"
    return Path(cache) / key / "bin"


def tool(name: str) -> str:
    """The pinned binary, else one on PATH; neither is an error naming the fix."""
    pinned = bin_dir() / name
    if pinned.exists():
        return str(pinned)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found in {bin_dir()} or on PATH: run `make build-cluster`")
    return found


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["KUBECONFIG"] = str(KUBECONFIG)
    # helm keeps caches and repository config under these; keep them out of $HOME.
    env.setdefault("HELM_CACHE_HOME", "/tmp/kitaru-helm/cache")
    env.setdefault("HELM_CONFIG_HOME", "/tmp/kitaru-helm/config")
    env.setdefault("HELM_DATA_HOME", "/tmp/kitaru-helm/data")
    return env


def run(
    argv: list[str], *, input: str | None = None, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        argv, input=input, capture_output=True, text=True, env=_env(), timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
            f"stderr:\n{proc.stderr}"
        )
    return proc


def helm(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run([tool("helm"), *args], check=check, timeout=timeout)


def kubectl(
    *args: str, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return run([tool("kubectl"), *args], input=input, check=check)


def kubectl_json(*args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json").stdout)


def get(kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    proc = kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr:
            return None
        raise AssertionError(proc.stderr)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def wait_until(
    what: str, probe: Callable[[], T | None], timeout: float = 120, interval: float = 0.5
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


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
    deployment = {
        "apiVersion": "kitaru.dev/v1alpha1",
        "kind": "FlowDeployment",
        "metadata": {
            "name": f"hello-v{version}",
            "namespace": namespace,
            "labels": {"kitaru.dev/flow": "hello", "kitaru.dev/version": str(version)},
        },
        "spec": {
            "flow": "hello",
            "version": version,
            "snapshot": {
                "image": RUNNER_IMAGE,
                "entrypoint": "hello:hello",
                "source": {
                    "configMap": cm_name,
                    "sha256": source_sha256(files),
                    "files": sorted(files),
                },
            },
            "inputs": {"name": "world"},
            "inputSchema": {
                "type": "object",
                "properties": {"name": {"type": "string", "default": "world"}},
            },
        },
    }
    return [configmap, deployment]


def invocation(namespace: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kitaru.dev/v1alpha1",
        "kind": "FlowInvocation",
        "metadata": {"name": name, "namespace": namespace, "labels": {"kitaru.dev/flow": "hello"}},
        "spec": {"flow": "hello", "inputs": inputs},
    }


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

    return wait_until(f"invocation {namespace}/{name} to finish", finished, timeout=timeout)
