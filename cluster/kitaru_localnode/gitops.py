"""Flux beside a local cluster, for the GitOps tier:
`python -m kitaru_localnode.gitops up|down|status [--dir CLUSTER_DIR]`.

Three processes on this machine, all on loopback, built by `cluster/build.sh gitops`:
Flux's test git server (bare repositories under `<dir>/gitops/repos`, over smart
HTTP; a push creates a missing repository), Flux's source-controller (its artifact
server on loopback) and kustomize-controller. Each controller has a client
certificate of the cluster's CA and the RBAC Flux installs: the source-controller's
upstream ClusterRole, cluster-admin for the kustomize-controller. Flux's CRDs come
from the controllers' modules; the GitRepositories and Kustomizations go in the
`flux-system` namespace. Logs, pid files and kubeconfigs are under `<dir>/gitops/`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from kitaru_localnode import procs
from kitaru_localnode.cluster import (
    DEFAULT_DIR,
    ClusterError,
    Launcher,
    State,
    bin_dir,
    is_up,
    report_down,
    report_up,
    write_kubeconfig,
)
from kitaru_localnode.paths import BUILD_SCRIPT
from kitaru_localnode.pki import ensure_client_cert

NAMESPACE = "flux-system"
COMPONENTS = ["gittestserver", "source-controller", "kustomize-controller"]
# name -> the user its client certificate names (RBAC subjects below)
CONTROLLER_USERS = {
    "source-controller": "flux:source-controller",
    "kustomize-controller": "flux:kustomize-controller",
}


class GitopsState(State):
    """`<cluster dir>/gitops`: logs, pids and kubeconfigs of the Flux processes, the
    git server's repositories and URL, source-controller's artifact storage."""

    def __init__(self, cluster_dir: Path) -> None:
        super().__init__(cluster_dir / "gitops")
        self.repos = self.root / "repos"
        self.storage = self.root / "storage"
        self.url_file = self.root / "git-url"

    def git_url(self) -> str:
        return self.url_file.read_text().strip()


def gitops_dir() -> Path:
    """Build the GitOps set when missing (cached) and return its folder (bin/, crds/,
    rbac/)."""
    proc = subprocess.run(["bash", str(BUILD_SCRIPT), "gitops"], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise ClusterError(f"building the GitOps set failed ({BUILD_SCRIPT} gitops)")
    return Path(proc.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def rbac_manifests(source_controller_role: dict[str, Any]) -> list[dict[str, Any]]:
    """The namespace of Flux's objects and the controllers' RBAC, as Flux installs it:
    source-controller gets its own ClusterRole (from its module), kustomize-controller
    applies whatever a Kustomization holds, so cluster-admin."""
    role = {**source_controller_role, "metadata": {"name": "kitaru-flux-source-controller"}}

    def binding(controller: str, cluster_role: str) -> dict[str, Any]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"kitaru-flux-{controller}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": cluster_role,
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "User",
                    "name": CONTROLLER_USERS[controller],
                }
            ],
        }

    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        role,
        binding("source-controller", "kitaru-flux-source-controller"),
        binding("kustomize-controller", "cluster-admin"),
    ]


def _kubectl(cluster: State, *args: str, input: str | None = None) -> None:
    proc = subprocess.run(
        [str(bin_dir() / "kubectl"), f"--kubeconfig={cluster.kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)}: {proc.stdout}{proc.stderr}")


def _install(cluster: State, flux: Path) -> None:
    """Flux's CRDs (server-side: they are too large for the last-applied annotation),
    then the namespace and RBAC; wait until the CRDs serve."""
    _kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(flux / "crds"))
    role = yaml.safe_load((flux / "rbac" / "source-controller.yaml").read_text())
    items = {"apiVersion": "v1", "kind": "List", "items": rbac_manifests(role)}
    _kubectl(cluster, "apply", "--server-side", "-f", "-", input=json.dumps(items))
    _kubectl(
        cluster,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/gitrepositories.source.toolkit.fluxcd.io",
        "crd/kustomizations.kustomize.toolkit.fluxcd.io",
    )


def _server(cluster: State) -> str:
    config = json.loads(cluster.kubeconfig.read_text())
    return str(config["clusters"][0]["cluster"]["server"])


def is_running(state: GitopsState) -> bool:
    return all(procs.recorded_alive(state.pidfile(n)) for n in COMPONENTS)


def down(state: GitopsState) -> list[str]:
    """Stop what `up` started, by recorded pid; returns what could not be stopped."""
    leftovers = []
    for name in reversed(COMPONENTS):
        path = state.pidfile(name)
        if procs.stop_groups([path]):
            leftovers.append(name)
        path.unlink(missing_ok=True)
    return leftovers


def up(cluster_dir: Path) -> GitopsState:
    cluster = State(cluster_dir)
    state = GitopsState(cluster.root)
    if not is_up(cluster):
        raise ClusterError(f"no cluster runs in {cluster.root}: start it first")
    if is_running(state):
        print(f"already up: git server {state.git_url()}")
        return state
    down(state)
    flux = gitops_dir()
    for d in (state.logs, state.pids, state.repos, state.storage):
        d.mkdir(parents=True, exist_ok=True)
    server = _server(cluster)
    env = {**os.environ, "RUNTIME_NAMESPACE": NAMESPACE}
    for name, user in CONTROLLER_USERS.items():
        ensure_client_cert(cluster.pki, f"flux-{name}", user)
        write_kubeconfig(
            state.kubeconfigs / f"{name}.kubeconfig", server, cluster.pki, f"flux-{name}"
        )
    _install(cluster, flux)

    launcher = Launcher(state)
    try:
        state.url_file.unlink(missing_ok=True)
        launcher.start(
            "gittestserver",
            [
                str(flux / "bin" / "gittestserver"),
                f"--root={state.repos}",
                f"--url-file={state.url_file}",
            ],
            env=env,
        )
        launcher.wait("gittestserver", state.url_file.exists, 30)

        storage_port = _free_port()
        health = {name: _free_port() for name in CONTROLLER_USERS}
        common = ["--metrics-addr=0", "--log-level=info", "--enable-leader-election=false"]
        launcher.start(
            "source-controller",
            [
                str(flux / "bin" / "source-controller"),
                *common,
                f"--health-addr=127.0.0.1:{health['source-controller']}",
                f"--storage-path={state.storage}",
                f"--storage-addr=127.0.0.1:{storage_port}",
                f"--storage-adv-addr=127.0.0.1:{storage_port}",
            ],
            env={**env, "KUBECONFIG": str(state.kubeconfigs / "source-controller.kubeconfig")},
        )
        launcher.start(
            "kustomize-controller",
            [
                str(flux / "bin" / "kustomize-controller"),
                *common,
                f"--health-addr=127.0.0.1:{health['kustomize-controller']}",
                # Nothing beyond this machine: bases must be in the source.
                "--no-remote-bases=true",
            ],
            env={**env, "KUBECONFIG": str(state.kubeconfigs / "kustomize-controller.kubeconfig")},
        )
        for name, port in health.items():
            launcher.wait(name, functools.partial(_http_ok, f"http://127.0.0.1:{port}/readyz"), 60)
    except (ClusterError, KeyboardInterrupt):
        down(state)
        raise
    print(f"flux up: git server {state.git_url()}, logs {state.logs}")
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kitaru_localnode.gitops")
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help="the cluster's state directory"
    )
    args = parser.parse_args(argv)
    state = GitopsState(args.dir.resolve())
    if args.command == "status":
        running = is_running(state)
        print("up" if running else "down")
        return 0 if running else 1
    if args.command == "down":
        return report_down(down(state))
    return report_up("gitops", lambda: up(args.dir))


if __name__ == "__main__":
    sys.exit(main())
