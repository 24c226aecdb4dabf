"""Start, stop and check the local cluster: `python -m kitaru_localnode.cluster up|down|status`.

Everything lives in one state directory (default `<checkout>/.cluster`): certificates,
etcd data, logs, pid files, kubeconfigs, the node's containerd and kubelet folders, and
the data of its image registry and object store.
`--dir` runs an independent cluster elsewhere (its own ports); `--no-node` starts the
control plane alone, on loopback (benchmark clusters, a second cluster beside the one
that owns the machine's node).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import fcntl
import functools
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from kitaru_localnode import images, node, procs, registry, store
from kitaru_localnode.paths import BUILD_SCRIPT, CHECKOUT, cache_dir
from kitaru_localnode.pki import NODE_IP, NODE_NAME, ensure_pki

DEFAULT_DIR = CHECKOUT / ".cluster"
CHART = CHECKOUT / "charts" / "kitaru-operator"
SERVICE_CIDR = node.SERVICE_CIDR

# Start order; `down` stops in reverse (the kubelet first, the control plane last).
CONTROL_PLANE = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
NODE = ["registry", "containerd", "coredns", "kube-proxy", "kubelet"]
PORT_NAMES = [
    "etcd",
    "etcd-peer",
    "apiserver",
    "controller-manager",
    "scheduler",
    "kubelet",
    "kubelet-healthz",
    "kube-proxy-healthz",
    "kube-proxy-metrics",
    "coredns-ready",
    "registry",
]
# Ports a user types: the first choice when free (the registry's is kind's local one).
PREFERRED_PORTS = {"registry": registry.DEFAULT_PORT}


class ClusterError(Exception):
    """A component failed to start; the message names it and carries its log tail."""


class State:
    """Paths of one cluster's state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.pki = self.root / "pki"
        self.logs = self.root / "logs"
        self.pids = self.root / "pids"
        self.kubeconfig = self.root / "kubeconfig"
        self.kubeconfigs = self.root / "kubeconfigs"
        self.ports_file = self.root / "ports.json"
        self.components_file = self.root / "components.json"
        self.images_file = self.root / "images.json"
        self.env_file = self.root / "env"
        self.node = node.NodePaths(self.root)
        self.registry = self.root / "registry"
        self.registry_config = self.registry / "config.yaml"
        # What was pushed to the registry: buildah image (or chart content) -> digest.
        self.published_file = self.registry / "published.json"
        self.store = store.StoreDirs(self.root)
        self.helm_home = self.root / "helm"

    def components(self) -> list[str]:
        """What the last `up` started (the control plane alone with --no-node)."""
        try:
            names: list[str] = json.loads(self.components_file.read_text())
            return names
        except (OSError, ValueError):
            return CONTROL_PLANE + NODE

    def pidfile(self, name: str) -> Path:
        return self.pids / f"{name}.pid"

    def command_file(self, name: str) -> Path:
        """How a component was started (argv and environment), for `restart`."""
        return self.pids / f"{name}.command.json"

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
        port = previous.get(name) or PREFERRED_PORTS.get(name, 0)
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
        self.state.command_file(name).write_text(json.dumps({"argv": argv, "env": env}))
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


def _api_host(state: State) -> str:
    """The API server's address: the node's when the cluster has a node, else loopback."""
    return "127.0.0.1" if state.components() == CONTROL_PLANE else NODE_IP


def _apiserver_ready(state: State, port: int) -> bool:
    status, body = _get(f"https://{_api_host(state)}:{port}/readyz", _ssl_context(state))
    return status == 200 and body.strip() == b"ok"


def _node_ready(state: State, port: int, since: float) -> bool:
    """The Node is Ready with a heartbeat from this run (not a stale one from etcd)."""
    url = f"https://{_api_host(state)}:{port}/api/v1/nodes/{NODE_NAME}"
    status, body = _get(url, _ssl_context(state))
    if status != 200:
        return False
    for cond in json.loads(body).get("status", {}).get("conditions", []):
        if cond["type"] == "Ready" and cond["status"] == "True":
            beat = datetime.datetime.strptime(cond["lastHeartbeatTime"], "%Y-%m-%dT%H:%M:%SZ")
            return beat.replace(tzinfo=datetime.UTC).timestamp() >= since - 1
    return False


def _default_sa_exists(state: State, port: int) -> bool:
    url = f"https://{_api_host(state)}:{port}/api/v1/namespaces/default/serviceaccounts/default"
    return _get(url, _ssl_context(state))[0] == 200


def _create(state: State, port: int, obj: dict) -> None:
    """POST one object with the admin identity; an existing one is left as it is."""
    group_version = obj["apiVersion"]
    prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    plural = obj["kind"].lower() + "s"
    request = urllib.request.Request(
        f"https://{_api_host(state)}:{port}{prefix}/{plural}",
        data=json.dumps(obj).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        urllib.request.urlopen(request, context=_ssl_context(state), timeout=10).close()
    except urllib.error.HTTPError as err:
        if err.code != 409:
            raise ClusterError(f"creating {obj['kind']} {obj['metadata']['name']}: {err}") from err


def _binary_answers(argv: list[str]) -> bool:
    return subprocess.run(argv, capture_output=True).returncode == 0


def is_up(state: State) -> bool:
    """Every component recorded and alive, and the API server ready."""
    if not all(procs.recorded_alive(state.pidfile(n)) for n in state.components()):
        return False
    port = state.ports().get("apiserver")
    return port is not None and _apiserver_ready(state, port)


def down(state: State) -> list[str]:
    """Stop the kubelet, remove every pod sandbox, stop the rest of the node and the
    control plane, then remove what the node left on the host (iptables rules, mounts,
    the bridge). Components are stopped even when the last `up` failed half-way."""
    leftovers: list[str] = []
    binaries = _cached_bin_dir(state)
    for name in reversed(CONTROL_PLANE + NODE):
        if name == "containerd" and binaries is not None:
            node.remove_pod_sandboxes(state.node, binaries / "crictl")
        path = state.pidfile(name)
        if procs.stop_groups([path]):
            leftovers.append(name)
        path.unlink(missing_ok=True)
    if state.node.root.is_dir():
        node.kill_leftovers(state.node)
        node.remove_kube_chains()
        node.remove_cgroups()
        if node.node_owner() in (None, state.root):
            node.remove_bridge()
            node.release_node(state.root)
    return leftovers


def _cached_bin_dir(state: State) -> Path | None:
    """The binaries of the last `up` (recorded in its env file), without building."""
    env_file = state.env_file
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            if line.startswith("export KITARU_BIN_DIR="):
                return Path(line.split("=", 1)[1])
    return None


def up(state: State, with_node: bool = True) -> None:
    if is_up(state):
        if state.images_file.exists() and node.node_owner() == state.root:
            _refresh_images(state)
        print(f"already up (KUBECONFIG={state.kubeconfig})")
        return
    if with_node:
        _check_node_is_ours(state)
    binaries = bin_dir()
    try:
        built = images.build_all(binaries) if with_node else None
    except images.ImageBuildError as err:
        raise ClusterError(str(err)) from err
    # A half-running cluster (something crashed) is restarted from scratch.
    down(state)
    if with_node:
        node.claim_node(state.root)
    _check_no_stray_etcd(state)
    started_at = time.monotonic()
    ports, server = _write_state(state, binaries, with_node)
    launcher = Launcher(state)
    try:
        if with_node:
            node.ensure_bridge()
        _start_control_plane(launcher, state, binaries, ports)
        if built is not None:
            published = _start_node(launcher, state, binaries, ports, built)
        launcher.wait(
            "kube-controller-manager", lambda: _default_sa_exists(state, ports["apiserver"]), 30
        )
        if built is not None:
            _start_store(state, binaries, published["versitygw"])
    except (ClusterError, KeyboardInterrupt):
        down(state)
        raise
    if built is not None:
        _write_images(state, {"pause": built.pause, **published})
        _write_env(state, binaries, _node_env(state, published))
    print(
        f"cluster up in {time.monotonic() - started_at:.1f} s: {server}\n"
        f"  export KUBECONFIG={state.kubeconfig}   (or: source {state.env_file})\n"
        f"  logs: {state.logs}"
    )


def _refresh_images(state: State) -> None:
    """Rebuild the images whose inputs changed since the node started, push them and make
    the node forget their old tags, so a running cluster runs the checkout as it is now
    (tests would otherwise exercise the code of the last `up`); a new store image rolls
    the store's pod."""
    binaries = bin_dir()
    try:
        built = images.build_all(binaries)
        node.import_image(state.node, built.pause)
        published = _publish(state, binaries, built)
        _start_store(state, binaries, published["versitygw"])
    except (images.ImageBuildError, RuntimeError) as err:
        raise ClusterError(str(err)) from err
    _write_images(state, {"pause": built.pause, **published})
    _write_env(state, binaries, _node_env(state, published))


def refresh_images_command(state: State) -> int:
    """`images`: build; when this cluster runs the node, push and roll as `up` does."""
    if is_up(state) and node.node_owner() == state.root:
        _refresh_images(state)
        print(f"images pushed to {_registry_address(state)} ({state.images_file})")
        return 0
    try:
        built = images.build_all(bin_dir())
    except images.ImageBuildError as err:
        raise ClusterError(str(err)) from err
    print(f"images built: {', '.join(['pause', *built.pushed])}; `up` pushes them")
    return 0


def _registry_address(state: State) -> str:
    return registry.address(state.ports()["registry"])


def _publish(state: State, binaries: Path, built: images.Built) -> dict[str, images.BuiltImage]:
    """Push the images (and the chart) the registry lacks; then the node forgets tags
    that named an older build, so a pod naming the tag pulls the new one."""
    address = _registry_address(state)
    builder = images.Builder(cache_dir(), CHECKOUT, binaries)
    published = registry.publish_images(builder, built.pushed, address, state.published_file)
    _publish_chart(state, binaries, address)
    node.forget_stale_tags(state.node, {p.ref: p.digest for p in published.values()})
    return published


def _publish_chart(state: State, binaries: Path, address: str) -> None:
    """The chart as an OCI artifact (oci://<registry>/charts/kitaru-operator), pushed
    again only when its files changed."""
    key = f"chart:{images.tree_hash(CHART.parent, [CHART.name], [])}"
    try:
        pushed: dict[str, str] = json.loads(state.published_file.read_text())
    except (OSError, ValueError):
        pushed = {}
    reference = pushed.get(key, "")
    path, _, digest = reference.removeprefix(f"oci://{address}/").partition("@")
    if digest and registry.manifest_digest(address, path, digest) == digest:
        return
    pushed[key] = registry.push_chart(
        binaries / "helm", CHART, address, registry.helm_env(state.helm_home)
    )
    state.published_file.write_text(json.dumps(pushed, indent=2) + "\n")


def _write_images(state: State, built: dict[str, images.BuiltImage]) -> None:
    state.images_file.write_text(
        json.dumps({n: {**asdict(i), "pinned": i.pinned} for n, i in built.items()}, indent=2)
        + "\n"
    )


def _node_env(state: State, published: dict[str, images.BuiltImage]) -> list[str]:
    """What `source .cluster/env` adds with a node: the registry, the runner image
    pinned by digest (the default of `kitaru deploy`), and the store."""
    return [
        f"export KITARU_LOCAL_REGISTRY={_registry_address(state)}",
        f"export KITARU_RUNNER_IMAGE={published['runner'].pinned}",
        *store.env_lines(store.credentials(state.store)),
    ]


def _write_env(state: State, binaries: Path, extra: Sequence[str] = ()) -> None:
    """The shell environment of the cluster (readable by its owner only: it may carry
    the store's credentials)."""
    lines = [
        f"export KITARU_BIN_DIR={binaries}",
        f"export KUBECONFIG={state.kubeconfig}",
        'export PATH="$KITARU_BIN_DIR:$PATH"',
        *extra,
    ]
    tmp = state.env_file.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    tmp.replace(state.env_file)


def _check_node_is_ours(state: State) -> None:
    """The node's packages are installed and no other cluster holds this machine's node."""
    if missing := node.missing_prerequisites():
        raise ClusterError(
            f"the node needs {', '.join(missing)}: run `make packages` "
            "(cluster/install-packages.sh) as root, or start with --no-node"
        )
    if (owner := node.node_owner()) not in (None, state.root):
        raise ClusterError(
            f"this machine's node belongs to the cluster in {owner}; stop it first "
            "or start this one with --no-node"
        )


def _check_no_stray_etcd(state: State) -> None:
    """No etcd this directory did not record still uses its data directory."""
    data_flag = f"--data-dir={state.root / 'etcd'}"
    strays = [pid for pid in procs.with_cmdline(data_flag) if pid != os.getpid()]
    if strays:
        raise ClusterError(
            f"etcd process(es) {strays} not recorded in {state.pids} still use "
            f"{state.root / 'etcd'}; stop them first"
        )


def _write_state(state: State, binaries: Path, with_node: bool) -> tuple[dict[str, int], str]:
    """The cluster directory before anything starts: which components run, the env file,
    certificates, ports and a kubeconfig per identity. Returns the ports and the API
    server's URL."""
    for d in (state.logs, state.pids, state.root / "etcd"):
        d.mkdir(parents=True, exist_ok=True)
    components = CONTROL_PLANE + NODE if with_node else CONTROL_PLANE
    state.components_file.write_text(json.dumps(components) + "\n")
    _write_env(state, binaries)
    ensure_pki(state.pki)
    ports = choose_ports(state.ports())
    state.ports_file.write_text(json.dumps(ports, indent=2) + "\n")
    server = f"https://{_api_host(state)}:{ports['apiserver']}"
    write_kubeconfig(state.kubeconfig, server, state.pki, "admin")
    for user in ("controller-manager", "scheduler", "node", "kube-proxy", "coredns"):
        write_kubeconfig(state.kubeconfigs / f"{user}.kubeconfig", server, state.pki, user)
    return ports, server


def _start_control_plane(
    launcher: Launcher, state: State, binaries: Path, ports: dict[str, int]
) -> None:
    """etcd, then the API server on the node's address (loopback without a node), then
    the controller manager and the scheduler."""
    etcd_url = _start_etcd(launcher, state, binaries, ports)
    _start_apiserver(launcher, state, binaries, ports, etcd_url)
    _start_controllers(launcher, state, binaries, ports)


def _start_etcd(launcher: Launcher, state: State, binaries: Path, ports: dict[str, int]) -> str:
    """etcd on loopback; returns its client URL."""
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
    return etcd_url


def _start_apiserver(
    launcher: Launcher, state: State, binaries: Path, ports: dict[str, int], etcd_url: str
) -> None:
    pki = state.pki
    host = _api_host(state)
    # With a node, the `kubernetes` Service's endpoint is the node's address, which pods
    # reach; without one there is no pod, and Endpoints may not hold loopback addresses.
    reconciler = "lease" if host == NODE_IP else "none"
    launcher.start(
        "kube-apiserver",
        [
            str(binaries / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            f"--bind-address={host}",
            f"--advertise-address={host}",
            f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            # ValidatingAdmissionPolicy, PodSecurity and the ServiceAccount plugin are on
            # by default.
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
            f"--endpoint-reconciler-type={reconciler}",
            f"--cert-dir={pki / 'generated'}",
            "--profiling=false",
        ],
    )
    launcher.wait("kube-apiserver", lambda: _apiserver_ready(state, ports["apiserver"]), 90)


def _start_controllers(
    launcher: Launcher, state: State, binaries: Path, ports: dict[str, int]
) -> None:
    """kube-controller-manager and kube-scheduler, each with an identity of its own."""
    pki = state.pki
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


def _start_node(
    launcher: Launcher,
    state: State,
    binaries: Path,
    ports: dict[str, int],
    built: images.Built,
) -> dict[str, images.BuiltImage]:
    """The registry (with the images pushed), containerd (with the pause image imported),
    CoreDNS, kube-proxy and the kubelet, which registers the Node; ready when the Node is
    Ready with a fresh heartbeat and kube-proxy has synced. Returns the published images."""
    paths = state.node
    address = registry.address(ports["registry"])
    state.registry.mkdir(parents=True, exist_ok=True)
    # JSON is YAML.
    config = registry.build_config(state.registry / "data", address)
    state.registry_config.write_text(json.dumps(config, indent=2) + "\n")
    launcher.start(
        "registry",
        [str(binaries / "registry"), "serve", str(state.registry_config)],
        env={**os.environ, **registry.ENV},
    )
    launcher.wait("registry", functools.partial(registry.answers, address), 30)

    node.write_configs(
        paths, state.pki, state.kubeconfigs, ports, built.pause.ref, registry=address
    )
    launcher.start(
        "containerd",
        ["containerd", f"--config={paths.containerd_config}"],
        env={**os.environ, **node.CLOSED_PROXY_ENV},
    )
    ctr_version = ["ctr", f"--address={paths.containerd_socket}", "version"]
    launcher.wait("containerd", functools.partial(_binary_answers, ctr_version), 30)
    try:
        node.import_image(paths, built.pause)
        published = _publish(state, binaries, built)
    except (images.ImageBuildError, RuntimeError) as err:
        raise ClusterError(str(err)) from err

    for obj in node.COREDNS_RBAC:
        _create(state, ports["apiserver"], obj)
    launcher.start("coredns", [str(binaries / "coredns"), f"-conf={paths.corefile}"])
    ready = f"http://127.0.0.1:{ports['coredns-ready']}/ready"
    launcher.wait("coredns", lambda: _get(ready)[0] == 200, 30)

    launcher.start(
        "kube-proxy", [str(binaries / "kube-proxy"), f"--config={paths.kube_proxy_config}"]
    )
    kubelet_started = time.time()
    launcher.start(
        "kubelet",
        [
            str(binaries / "kubelet"),
            f"--config={paths.kubelet_config}",
            f"--kubeconfig={state.kubeconfigs / 'node.kubeconfig'}",
            f"--root-dir={paths.kubelet_root}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
        ],
    )
    launcher.wait("kubelet", lambda: _node_ready(state, ports["apiserver"], kubelet_started), 60)
    # kube-proxy reports healthy once it has synced its rules for the registered Node.
    healthz = f"http://127.0.0.1:{ports['kube-proxy-healthz']}/healthz"
    launcher.wait("kube-proxy", lambda: _get(healthz)[0] == 200, 30)
    return published


def _kubectl(
    state: State, binaries: Path, *args: str, input: str | None = None, timeout: float = 60
) -> str:
    proc = subprocess.run(
        [str(binaries / "kubectl"), f"--kubeconfig={state.kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def _start_store(state: State, binaries: Path, image: images.BuiltImage) -> None:
    """The object store as a pod: the chart's store template with the local values, on a
    local volume; ready when its rollout is done and it answers on the node's address."""
    store.prepare_volume(state.store)
    creds = store.credentials(state.store)
    env = registry.helm_env(state.helm_home)
    try:
        rendered = store.render_chart(binaries / "helm", CHART, store.chart_values(image), env)
    except RuntimeError as err:
        raise ClusterError(str(err)) from err
    objects = [*store.node_objects(state.store, creds), *rendered]
    _kubectl(
        state,
        binaries,
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=kitaru-localnode",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
    )
    _kubectl(
        state,
        binaries,
        f"--namespace={store.NAMESPACE}",
        "rollout",
        "status",
        f"deployment/{store.NAME}",
        "--timeout=180s",
        timeout=200,
    )
    deadline = time.monotonic() + 30
    while not store.answers():
        if time.monotonic() > deadline:
            raise ClusterError(
                f"the store's pod is ready, but {store.endpoint()}/health does not answer"
            )
        time.sleep(0.2)


def restart(state: State, name: str) -> None:
    """Crash one component (SIGKILL of its own process, not its group: containerd's shims
    and their containers live on, as under systemd) and start it again as it was started.
    For the fault suite; the caller waits for whatever readiness it needs."""
    recorded = procs.read_pidfile(state.pidfile(name))
    if recorded is None or not procs.recorded_alive(state.pidfile(name)):
        raise ClusterError(f"{name} is not running (no live pid in {state.pidfile(name)})")
    command = json.loads(state.command_file(name).read_text())
    pid = recorded[0]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while procs.start_time(pid) == recorded[1] and time.monotonic() < deadline:
        time.sleep(0.05)
    Launcher(state).start(name, command["argv"], command["env"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kitaru_localnode.cluster")
    parser.add_argument("command", choices=["up", "down", "status", "restart", "images"])
    parser.add_argument("component", nargs="?", help="restart: which one (e.g. etcd, kubelet)")
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help="state directory (default: %(default)s)"
    )
    parser.add_argument(
        "--no-node", action="store_true", help="up: the control plane alone, on loopback"
    )
    args = parser.parse_args(argv)
    state = State(args.dir)
    if args.command == "status":
        ok = is_up(state)
        print("up" if ok else "down")
        return 0 if ok else 1
    if args.command == "restart":
        if args.component not in state.components():
            parser.error(f"restart which component? one of: {', '.join(state.components())}")
        try:
            restart(state, args.component)
        except ClusterError as err:
            print(f"restart failed: {err}", file=sys.stderr)
            return 1
        print(f"restarted {args.component}")
        return 0
    # Concurrent up/down calls on one state directory (two terminals, make test and a
    # human) run one after the other: the second `up` then finds the cluster up.
    state.root.mkdir(parents=True, exist_ok=True)
    with (state.root / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _locked(args.command, state, with_node=not args.no_node)


def _locked(command: str, state: State, with_node: bool) -> int:
    if command == "down":
        return report_down(down(state))
    if command == "images":
        try:
            return refresh_images_command(state)
        except ClusterError as err:
            print(f"images failed: {err}", file=sys.stderr)
            return 1
    return report_up("cluster", lambda: up(state, with_node=with_node))


def report_down(leftovers: list[str]) -> int:
    """The exit status of `down`, saying what could not be stopped."""
    if leftovers:
        print(f"could not stop: {', '.join(leftovers)}", file=sys.stderr)
        return 1
    print("down")
    return 0


def report_up(what: str, start: Callable[[], object]) -> int:
    """The exit status of `up`: a ClusterError is a one-line message, not a traceback."""
    try:
        start()
    except ClusterError as err:
        print(f"{what} up failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
