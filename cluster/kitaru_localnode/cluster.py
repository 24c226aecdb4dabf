"""Start, stop and check the local cluster: `python -m kitaru_localnode.cluster up|down|status`.

Everything lives in one state directory (default `<checkout>/.cluster`): certificates,
etcd data, logs, pid files, kubeconfigs and the node agent's pod folders. `--dir` runs
an independent cluster elsewhere (its own ports), which the tests use to check `down`.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import fcntl
import functools
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from kitaru_localnode import procs
from kitaru_localnode.pki import NODE_NAME, ensure_pki

_PKG = Path(__file__).resolve().parent
_CHECKOUT = _PKG.parents[1] if (_PKG.parent / "build.sh").exists() else Path.cwd()
BUILD_SCRIPT = _CHECKOUT / "cluster" / "build.sh"
DEFAULT_DIR = _CHECKOUT / ".cluster"
SERVICE_CIDR = "10.96.0.0/16"

# Start order; `down` stops in reverse (the node agent first, then its pods).
COMPONENTS = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "localnode"]
PORT_NAMES = ["etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kubelet"]


class ClusterError(Exception):
    """A component failed to start; the message names it and carries its log tail."""


class State:
    """Paths of one cluster's state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.pki = self.root / "pki"
        self.logs = self.root / "logs"
        self.pids = self.root / "pids"
        self.pod_pids = self.pids / "pods"
        self.kubeconfig = self.root / "kubeconfig"
        self.kubeconfigs = self.root / "kubeconfigs"
        self.ports_file = self.root / "ports.json"

    def pidfile(self, name: str) -> Path:
        return self.pids / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def ports(self) -> dict[str, int]:
        try:
            data = json.loads(self.ports_file.read_text())
            return {k: int(v) for k, v in data.items()}
        except (OSError, ValueError):
            return {}


def _port_free(port: int) -> bool:
    """Free for a server: like the components' listeners, ignore TIME_WAIT leftovers."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def choose_ports(previous: dict[str, int]) -> dict[str, int]:
    """Reuse last run's ports when they are still free (kubeconfigs stay valid), else new ones.

    Every port is bind-tested; taken ones are replaced by a fresh ephemeral port.
    """
    chosen: dict[str, int] = {}
    for name in PORT_NAMES:
        port = previous.get(name, 0)
        if not port or port in chosen.values() or not _port_free(port):
            while True:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    port = s.getsockname()[1]
                if port not in chosen.values():
                    break
        chosen[name] = port
    return chosen


def bin_dir() -> Path:
    """Run the (cached, hence fast) build and return the directory of the binaries."""
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise ClusterError(f"building the binaries failed ({BUILD_SCRIPT}); see the messages above")
    return Path(proc.stdout.strip().splitlines()[-1])


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server: str, pki: Path, user: str) -> None:
    """A kubeconfig with the certificates embedded, so it can be copied anywhere."""
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kitaru-local",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": _b64(pki / "ca.crt"),
                },
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(pki / f"{user}.crt"),
                    "client-key-data": _b64(pki / f"{user}.key"),
                },
            }
        ],
        "contexts": [
            {"name": "kitaru-local", "context": {"cluster": "kitaru-local", "user": user}}
        ],
        "current-context": "kitaru-local",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg, indent=2) + "\n")  # JSON is valid YAML
    path.chmod(0o600)


def _ssl_context(state: State, verify: bool = True) -> ssl.SSLContext:
    if verify:
        ctx = ssl.create_default_context(cafile=str(state.pki / "ca.crt"))
    else:
        ctx = ssl._create_unverified_context()
    ctx.load_cert_chain(str(state.pki / "admin.crt"), str(state.pki / "admin.key"))
    return ctx


def _get(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (OSError, ValueError):
        return 0, b""


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Launcher:
    """Starts components in their own sessions and records them; cleans up on failure."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.started: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.state.logs.mkdir(parents=True, exist_ok=True)
        with self.state.log(name).open("ab") as log:
            log.write(f"\n==== {time.strftime('%F %T')} {' '.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                cwd=self.state.root,
            )
        procs.write_pidfile(self.state.pidfile(name), proc.pid)
        self.started[name] = proc

    def wait(self, name: str, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        proc = self.started[name]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ClusterError(
                    f"{name} exited with code {proc.returncode}; last lines of "
                    f"{self.state.log(name)}:\n{_tail(self.state.log(name))}"
                )
            if ready():
                return
            time.sleep(0.1)
        raise ClusterError(
            f"{name} not ready within {timeout:.0f} s; last lines of "
            f"{self.state.log(name)}:\n{_tail(self.state.log(name))}"
        )


def _healthy(url: str, ctx: ssl.SSLContext) -> bool:
    return _get(url, ctx)[0] == 200


def _apiserver_ready(state: State, port: int) -> bool:
    status, body = _get(f"https://127.0.0.1:{port}/readyz", _ssl_context(state))
    return status == 200 and body.strip() == b"ok"


def _node_ready(state: State, port: int, since: float) -> bool:
    """The Node is Ready with a heartbeat from this run (not a stale one from etcd)."""
    status, body = _get(f"https://127.0.0.1:{port}/api/v1/nodes/{NODE_NAME}", _ssl_context(state))
    if status != 200:
        return False
    for cond in json.loads(body).get("status", {}).get("conditions", []):
        if cond["type"] == "Ready" and cond["status"] == "True":
            beat = datetime.datetime.strptime(cond["lastHeartbeatTime"], "%Y-%m-%dT%H:%M:%SZ")
            return beat.replace(tzinfo=datetime.UTC).timestamp() >= since - 1
    return False


def _default_sa_exists(state: State, port: int) -> bool:
    url = f"https://127.0.0.1:{port}/api/v1/namespaces/default/serviceaccounts/default"
    return _get(url, _ssl_context(state))[0] == 200


def is_up(state: State) -> bool:
    """Every component recorded and alive, and the API server ready."""
    if not all(procs.recorded_alive(state.pidfile(n)) for n in COMPONENTS):
        return False
    port = state.ports().get("apiserver")
    return port is not None and _apiserver_ready(state, port)


def _pod_pidfiles(state: State) -> list[Path]:
    return sorted(state.pod_pids.glob("*.pid")) if state.pod_pids.is_dir() else []


def down(state: State) -> list[str]:
    """Stop the node agent, then every pod process it recorded, then the control plane."""
    leftovers: list[str] = []
    for name in reversed(COMPONENTS):
        path = state.pidfile(name)
        if procs.stop_groups([path]):
            leftovers.append(name)
        path.unlink(missing_ok=True)
        if name == "localnode":
            pod_files = _pod_pidfiles(state)
            if procs.stop_groups(pod_files, grace=3.0):
                leftovers.append("pod processes")
            for f in pod_files:
                f.unlink(missing_ok=True)
    return leftovers


def up(state: State) -> None:
    if is_up(state):
        print(f"already up (KUBECONFIG={state.kubeconfig})")
        return
    binaries = bin_dir()
    # A half-running cluster (something crashed) is restarted from scratch.
    down(state)
    data_flag = f"--data-dir={state.root / 'etcd'}"
    strays = [pid for pid in procs.with_cmdline(data_flag) if pid != os.getpid()]
    if strays:
        raise ClusterError(
            f"etcd process(es) {strays} not recorded in {state.pids} still use "
            f"{state.root / 'etcd'}; stop them first"
        )
    started_at = time.monotonic()
    for d in (state.logs, state.pids, state.pod_pids, state.root / "etcd"):
        d.mkdir(parents=True, exist_ok=True)
    ensure_pki(state.pki)
    ports = choose_ports(state.ports())
    state.ports_file.write_text(json.dumps(ports, indent=2) + "\n")
    server = f"https://127.0.0.1:{ports['apiserver']}"
    write_kubeconfig(state.kubeconfig, server, state.pki, "admin")
    for user in ("controller-manager", "scheduler", "node"):
        write_kubeconfig(state.kubeconfigs / f"{user}.kubeconfig", server, state.pki, user)

    pki = state.pki
    launcher = Launcher(state)
    try:
        etcd_url = f"http://127.0.0.1:{ports['etcd']}"
        peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
        launcher.start(
            "etcd",
            [
                str(binaries / "etcd"),
                "--name=kitaru",
                f"--data-dir={state.root / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=kitaru={peer_url}",
                # A throwaway dev store: durability is not worth the fsync latency.
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        launcher.wait("etcd", lambda: _get(f"{etcd_url}/health")[0] == 200, 30)

        launcher.start(
            "kube-apiserver",
            [
                str(binaries / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports['apiserver']}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=Node,RBAC",
                # ValidatingAdmissionPolicy and the ServiceAccount plugin are on by default.
                "--enable-admission-plugins=NodeRestriction",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                f"--kubelet-certificate-authority={pki / 'ca.crt'}",
                "--kubelet-preferred-address-types=InternalIP",
                "--allow-privileged=true",
                # Endpoints may not hold loopback addresses, so the `kubernetes` Service
                # gets none; pods reach the API server via KUBERNETES_SERVICE_HOST instead.
                "--endpoint-reconciler-type=none",
                f"--cert-dir={pki / 'generated'}",
                "--profiling=false",
            ],
        )
        launcher.wait("kube-apiserver", lambda: _apiserver_ready(state, ports["apiserver"]), 90)

        for name, user, port, extra in (
            (
                "kube-controller-manager",
                "controller-manager",
                ports["controller-manager"],
                [
                    "--use-service-account-credentials=true",
                    f"--root-ca-file={pki / 'ca.crt'}",
                    f"--service-account-private-key-file={pki / 'sa.key'}",
                    f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                    f"--cluster-signing-key-file={pki / 'ca.key'}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    "--controllers=*",
                ],
            ),
            ("kube-scheduler", "scheduler", ports["scheduler"], []),
        ):
            kubeconfig = state.kubeconfigs / f"{user}.kubeconfig"
            launcher.start(
                name,
                [
                    str(binaries / name),
                    f"--kubeconfig={kubeconfig}",
                    f"--authentication-kubeconfig={kubeconfig}",
                    f"--authorization-kubeconfig={kubeconfig}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={port}",
                    f"--cert-dir={pki / 'generated' / user}",
                    "--leader-elect=false",
                    *extra,
                ],
            )
        unverified = _ssl_context(state, verify=False)
        for name, port_name in (
            ("kube-controller-manager", "controller-manager"),
            ("kube-scheduler", "scheduler"),
        ):
            url = f"https://127.0.0.1:{ports[port_name]}/healthz"
            launcher.wait(name, functools.partial(_healthy, url, unverified), 30)

        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("KUBECONFIG", None)
        launcher.start(
            "localnode",
            [
                sys.executable,
                "-m",
                "kitaru_localnode.agent",
                f"--dir={state.root}",
                f"--port={ports['kubelet']}",
            ],
            env=env,
        )
        agent_started = time.time()
        launcher.wait(
            "localnode", lambda: _node_ready(state, ports["apiserver"], agent_started), 30
        )
        launcher.wait(
            "kube-controller-manager", lambda: _default_sa_exists(state, ports["apiserver"]), 30
        )
    except (ClusterError, KeyboardInterrupt):
        down(state)
        raise

    (state.root / "env").write_text(
        f"export KITARU_BIN_DIR={binaries}\n"
        f"export KUBECONFIG={state.kubeconfig}\n"
        f'export PATH="$KITARU_BIN_DIR:$PATH"\n'
    )
    print(
        f"cluster up in {time.monotonic() - started_at:.1f} s: {server}\n"
        f"  export KUBECONFIG={state.kubeconfig}   (or: source {state.root / 'env'})\n"
        f"  logs: {state.logs}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kitaru_localnode.cluster")
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help="state directory (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    state = State(args.dir)
    if args.command == "status":
        ok = is_up(state)
        print("up" if ok else "down")
        return 0 if ok else 1
    # Concurrent up/down calls on one state directory (two terminals, make test and a
    # human) run one after the other: the second `up` then finds the cluster up.
    state.root.mkdir(parents=True, exist_ok=True)
    with (state.root / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _locked(args.command, state)


def _locked(command: str, state: State) -> int:
    if command == "down":
        leftovers = down(state)
        if leftovers:
            print(f"could not stop: {', '.join(leftovers)}", file=sys.stderr)
            return 1
        print("down")
        return 0
    try:
        up(state)
    except ClusterError as err:
        print(f"cluster up failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
