"""Helpers shared by every test tier: deadline-bounded polling and the pinned kubectl."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kitaru.core.manifests import build_deployment

REPO = Path(__file__).resolve().parents[1]
# The cluster under test: the checkout's own (`make cluster-up`), unless
# KITARU_TEST_CLUSTER_DIR names another one that is already running, e.g. a
# control-plane-only cluster (`python -m kitaru_localnode.cluster up --no-node --dir D`)
# beside the machine's one node. Such a cluster is never started or stopped by the tests.
TEST_CLUSTER_ENV = "KITARU_TEST_CLUSTER_DIR"
CLUSTER_DIR = Path(os.environ.get(TEST_CLUSTER_ENV) or REPO / ".cluster").resolve()
KUBECONFIG = CLUSTER_DIR / "kubeconfig"
# Every test namespace: Pod Security Admission enforces the `restricted` standard there,
# as it should in a production project, so every pod the suite starts proves it complies.
TEST_NAMESPACE_LABELS = {
    "kitaru.dev/test": "true",
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}

T = TypeVar("T")


@dataclass(frozen=True)
class Cluster:
    """The running local cluster, as the `cluster` fixture hands it out."""

    kubeconfig: Path
    api_url: str


def wait_for(
    fn: Callable[[], T], timeout: float = 60.0, interval: float = 0.05, message: str = ""
) -> T:
    """Poll `fn` until it returns something truthy and return that; fail at the deadline
    with the last value (or exception) seen. The only way tests wait."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = value = fn()
            if value:
                return value
        except Exception as err:  # a not-yet-existing object, a transient API error...
            last = err
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {message or fn!r}; last: {last!r}"
            )
        time.sleep(interval)


def node_images(cluster_dir: Path = CLUSTER_DIR) -> dict[str, dict[str, str]]:
    """The images `cluster up` imported into the node's containerd (built from the
    project's Dockerfiles): name -> ref, digest, pinned (repository@digest)."""
    images: dict[str, dict[str, str]] = json.loads((cluster_dir / "images.json").read_text())
    return images


# The image a cluster without a node (`cluster up --no-node`: the API tier on a control
# plane of its own) names for its flows: none is imported there, and no pod ever runs.
NO_NODE_IMAGE = "kitaru.local/runner:no-node"


def runner_image() -> str:
    """The runner image pinned by digest: what every test flow runs in (`NO_NODE_IMAGE`
    on a cluster without a node)."""
    runner = node_images().get("runner")
    return runner["pinned"] if runner else NO_NODE_IMAGE


def cluster_env(cluster_dir: Path = CLUSTER_DIR) -> dict[str, str]:
    """What `source <cluster>/env` exports: the pinned binaries, the kubeconfig, and with
    a node its registry (KITARU_LOCAL_REGISTRY) and store (KITARU_STORE_*)."""
    exported = {}
    for line in (cluster_dir / "env").read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        exported[name] = value
    return exported


def bin_dir(cluster_dir: Path = CLUSTER_DIR) -> Path:
    """The pinned binaries: from the cluster's env file, else from the (cached) build."""
    env_file = cluster_dir / "env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            if line.startswith("export KITARU_BIN_DIR="):
                return Path(line.split("=", 1)[1])
    out = subprocess.run(
        ["bash", str(REPO / "cluster" / "build.sh")], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    return Path(out.strip().splitlines()[-1])


def kubectl(
    *args: str,
    namespace: str | None = None,
    check: bool = True,
    input: str | None = None,
    kubeconfig: Path = KUBECONFIG,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run the pinned kubectl against the local cluster; output is captured as text."""
    # Global flags first: everything after a `--` in args belongs to a container command.
    argv = [str(bin_dir() / "kubectl"), *(["--namespace", namespace] if namespace else []), *args]
    proc = subprocess.run(
        argv,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )
    return proc


def get(kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    """One object as kubectl prints it (None: not found)."""
    proc = kubectl("get", kind, name, "-o", "json", namespace=namespace, check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr:
            return None
        raise AssertionError(proc.stderr)
    found: dict[str, Any] = json.loads(proc.stdout)
    return found


def localnode(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m kitaru_localnode.MODULE ARGS` on the suite's cluster directory."""
    return subprocess.run(
        [sys.executable, "-m", f"kitaru_localnode.{module}", *args, f"--dir={CLUSTER_DIR}"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OperatorProcess:
    """`python -m kitaru_operator` for one namespace (or several: a tuple) as a subprocess
    that can be SIGKILLed and restarted; each run logs to its own `operator-<run>.log` in
    `log_dir`. `start`
    returns once the operator reports ready (its model of versions and routes listed),
    or, with `--leader-elect`, once it serves its health endpoint (it may be a standby).
    `kubeconfig` is its credentials: the admin's by default; `env` adds to its environment
    (e.g. a test seam such as the schedules' clock)."""

    def __init__(
        self,
        namespace: str | tuple[str, ...],
        log_dir: Path,
        resync_seconds: float = 30,
        extra_args: tuple[str, ...] = (),
        kubeconfig: Path = KUBECONFIG,
        env: dict[str, str] | None = None,
    ) -> None:
        self.namespaces = (namespace,) if isinstance(namespace, str) else namespace
        self.log_dir, self.resync_seconds = log_dir, resync_seconds
        self.extra_args = extra_args
        self.kubeconfig = kubeconfig
        self.env = env or {}
        self.runs = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.health_port = 0

    def start(self, wait: bool = True) -> None:
        self.runs += 1
        self.health_port = free_port()
        log = (self.log_dir / f"operator-{self.runs}.log").open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kitaru_operator",
                *(arg for namespace in self.namespaces for arg in ("--namespace", namespace)),
                "--metrics-port",
                "0",
                "--resync-seconds",
                str(self.resync_seconds),
                "--liveness",
                f"http://127.0.0.1:{self.health_port}/healthz",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                **self.env,
                "KUBECONFIG": str(self.kubeconfig),
                "PYTHONUNBUFFERED": "1",
            },
        )
        if wait:
            wait_for(self.ready, timeout=60, message=f"operator run {self.runs} ready")

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the operator exited ({self.proc.returncode}):\n{self.log()}")
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL the running operator, if one runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM: a clean shutdown (a leader releases its Lease)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)

    def log(self) -> str:
        """Every run's log, in order."""
        return "".join(p.read_text() for p in sorted(self.log_dir.glob("operator-*.log")))


# --- manifests of the kitaru.dev kinds, for tests that talk kubectl -----------------


def create(obj: dict, namespace: str, check: bool = True):
    """`kubectl create` one object given as a dict (JSON is YAML)."""
    return kubectl("create", "-f", "-", namespace=namespace, input=json.dumps(obj), check=check)


def deployment(flow: str, version: int, *, image: str | None = "") -> dict:
    """A FlowDeployment manifest; `image` defaults to the node's runner image, None
    leaves the snapshot without one."""
    image = runner_image() if image == "" else image
    return build_deployment(flow, version, entrypoint=f"flows.demo:{flow}", image=image)


def route(
    flow: str,
    tag: str,
    *versions: int,
    exclusive: bool = True,
    annotations: dict[str, str] | None = None,
) -> dict:
    """A FlowRoute manifest as kubectl would send it, valid or not: tests of the API
    server's own rules (tag patterns, `default` exclusive, duplicate versions) need
    routes that the core's builder, which validates, refuses to make."""
    metadata: dict = {"name": f"{flow.replace('_', '-')}.{tag}"}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "kitaru.dev/v1alpha1",
        "kind": "FlowRoute",
        "metadata": metadata,
        "spec": {"flow": flow, "tag": tag, "exclusive": exclusive, "versions": list(versions)},
    }
