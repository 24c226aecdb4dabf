"""The local cluster's node: containerd + runc with the CNI bridge, the kubelet,
kube-proxy and CoreDNS.

`build_*` return the components' configuration (pure, from paths and ports); the rest
prepares and tears down what the node makes on the host: the bridge whose gateway is the
node's address, the pause image imported into containerd (every other image is pulled
from the local registry), and on `down` the pod sandboxes, mounts, iptables rules and
the bridge itself.

Pods live on the bridge `kitaru0` (10.244.0.0/24); its gateway 10.244.0.1 is the node's
InternalIP and the API server's advertised address, since pods cannot reach the host's
loopback. Nothing listens on any other address of the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from kitaru_localnode import procs
from kitaru_localnode.pki import NODE_IP, NODE_NAME

BRIDGE = "kitaru0"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"
CLUSTER_DOMAIN = "cluster.local"
CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
RUNC = Path("/usr/sbin/runc")
# The node's cgroups (cgroupfs driver, cgroup v1 hierarchies): kubelet's default root.
KUBEPODS_CGROUP = Path("/sys/fs/cgroup/pids/kubepods")
# Every image comes from the local build, through the local registry on the node's
# address: containerd's other registry requests go through a "proxy" on a closed loopback
# port, so they fail at once and nothing leaves the machine.
CLOSED_PROXY_ENV = {
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": NODE_IP,
}
# The registry the project's images are published to by name (the chart's and the
# client's defaults): the node resolves it from the local registry, as a kind cluster
# configured with a registry mirror does.
MIRRORED_REGISTRY = "ghcr.io"
# Which state directory owns this machine's node: there is one bridge and one set of
# kube-proxy rules per machine, so a second cluster runs without a node (`--no-node`).
NODE_OWNER = Path("/run/kitaru-k8s/node-owner")


class NodePaths:
    """The node's part of a cluster's state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root / "node"
        self.containerd = self.root / "containerd"
        self.containerd_config = self.containerd / "config.toml"
        self.containerd_socket = self.containerd / "containerd.sock"
        # containerd's per-registry hosts.toml files (its CRI `config_path`).
        self.registry_hosts = self.containerd / "certs.d"
        self.cni_conf_dir = self.root / "cni" / "net.d"
        self.cni_ipam_dir = self.root / "cni" / "ipam"
        self.kubelet_root = self.root / "kubelet"
        self.kubelet_config = self.root / "kubelet.yaml"
        self.kube_proxy_config = self.root / "kube-proxy.yaml"
        self.corefile = self.root / "Corefile"

    @property
    def runtime_endpoint(self) -> str:
        return f"unix://{self.containerd_socket}"


# --- configuration builders (pure) ---------------------------------------------


def build_containerd_config(paths: NodePaths, sandbox_image: str) -> str:
    """containerd 1.6's config (version 2): its own root, state and socket, runc through
    the CRI plugin, pods on the CNI bridge, registries configured by hosts.toml files.

    `restrict_oom_score_adj`: the machine lacks CAP_SYS_RESOURCE, so containers may not
    get a lower OOM score than containerd; without it runc fails with "can't get final
    child's PID from pipe".
    """
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{paths.containerd / "root"}"
state = "{paths.containerd / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{paths.containerd_socket}"

[{cri}]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  BinaryName = "{RUNC}"
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{paths.cni_conf_dir}"
  max_conf_num = 1

[{cri}.registry]
  config_path = "{paths.registry_hosts}"
"""


def build_registry_hosts(registry: str) -> dict[str, str]:
    """containerd's hosts.toml per registry host (the folder name): the local registry
    over plain HTTP, and the same registry as the mirror of MIRRORED_REGISTRY, so its
    `kitaru-k8s/...` images resolve here (what is not here fails: the upstream is only
    reachable through the closed proxy)."""
    local = f"""[host."http://{registry}"]
  capabilities = ["pull", "resolve"]
"""
    return {
        registry: f'server = "http://{registry}"\n\n{local}',
        MIRRORED_REGISTRY: f'server = "https://{MIRRORED_REGISTRY}"\n\n{local}',
    }


def build_cni_config(paths: NodePaths) -> dict[str, Any]:
    """The pod network: a bridge whose gateway is the node, no masquerading (pods talk
    to the node and to each other only), hairpin so a pod reaches itself via a Service."""
    return {
        "cniVersion": "0.4.0",
        "name": "kitaru",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(paths.cni_ipam_dir),
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            }
        ],
    }


def build_kubelet_config(
    paths: NodePaths, pki: Path, port: int, healthz_port: int
) -> dict[str, Any]:
    """KubeletConfiguration for this machine: cgroupfs on the cgroup v1 hierarchy, swap
    tolerated; serving certificate of the cluster CA; only clients with a certificate of
    that CA (the API server) may call it; no disk-pressure eviction or image GC (the
    pause image is imported, not pulled, and the suite's timings should not include
    pulls of evicted images)."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "containerRuntimeEndpoint": paths.runtime_endpoint,
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "failCgroupV1": False,
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [NODE_IP],
        "resolvConf": "",
        "serializeImagePulls": False,
        "imageGCHighThresholdPercent": 100,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "0%",
            "nodefs.inodesFree": "0%",
            "imagefs.available": "0%",
        },
        "registerNode": True,
    }


def build_kube_proxy_config(kubeconfig: Path, healthz_port: int, metrics_port: int) -> dict:
    """iptables mode; NodePorts only on the node's address; conntrack limits left as the
    machine has them (kube-proxy may not change them here)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "nodePortAddresses": [f"{NODE_IP}/32"],
        "conntrack": {"maxPerCore": 0},
    }


def build_corefile(kubeconfig: Path, ready_port: int) -> str:
    """Cluster DNS on the node's address: Services and pods of cluster.local; no upstream
    (nothing else may be reached from here)."""
    return f""".:53 {{
    bind {NODE_IP}
    ready 127.0.0.1:{ready_port}
    errors
    loadbalance
    cache 30
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} kitaru-local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
}}
"""


# The read-only role CoreDNS needs (what the upstream system:coredns ClusterRole grants).
COREDNS_RBAC = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "system:coredns"},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["endpoints", "services", "pods", "namespaces"],
                "verbs": ["list", "watch"],
            },
            {
                "apiGroups": ["discovery.k8s.io"],
                "resources": ["endpointslices"],
                "verbs": ["list", "watch"],
            },
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "system:coredns"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "system:coredns",
        },
        "subjects": [{"kind": "User", "name": "system:coredns"}],
    },
]


def write_configs(
    paths: NodePaths,
    pki: Path,
    kubeconfigs: Path,
    ports: dict[str, int],
    sandbox_image: str,
    registry: str,
) -> None:
    for d in (paths.containerd, paths.cni_conf_dir, paths.cni_ipam_dir, paths.kubelet_root):
        d.mkdir(parents=True, exist_ok=True)
    paths.containerd_config.write_text(build_containerd_config(paths, sandbox_image))
    shutil.rmtree(paths.registry_hosts, ignore_errors=True)
    for host, hosts_toml in build_registry_hosts(registry).items():
        (paths.registry_hosts / host).mkdir(parents=True)
        (paths.registry_hosts / host / "hosts.toml").write_text(hosts_toml)
    (paths.cni_conf_dir / "10-kitaru.conflist").write_text(
        json.dumps(build_cni_config(paths), indent=2) + "\n"
    )
    kubelet = build_kubelet_config(paths, pki, ports["kubelet"], ports["kubelet-healthz"])
    paths.kubelet_config.write_text(json.dumps(kubelet, indent=2) + "\n")  # JSON is YAML
    proxy = build_kube_proxy_config(
        kubeconfigs / "kube-proxy.kubeconfig",
        ports["kube-proxy-healthz"],
        ports["kube-proxy-metrics"],
    )
    paths.kube_proxy_config.write_text(json.dumps(proxy, indent=2) + "\n")
    paths.corefile.write_text(
        build_corefile(kubeconfigs / "coredns.kubeconfig", ports["coredns-ready"])
    )


# --- the host side -------------------------------------------------------------


def missing_prerequisites() -> list[str]:
    """What the node and the image builds need from the host and do not find."""
    missing = [
        t
        for t in ("containerd", "ctr", "ip", "iptables", "buildah", "mmdebstrap")
        if shutil.which(t) is None
    ]
    missing += [
        str(p) for p in (RUNC, CNI_BIN_DIR / "bridge", CNI_BIN_DIR / "host-local") if not p.exists()
    ]
    if os.geteuid() != 0:
        missing.append("root (containerd, the bridge and iptables need it)")
    return missing


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def ensure_bridge() -> None:
    """The pod bridge with the node's address, made before the API server binds to it.
    The CNI bridge plugin adopts it (same name, same gateway)."""
    if _ip("link", "show", BRIDGE, check=False).returncode != 0:
        _ip("link", "add", BRIDGE, "type", "bridge")
    if NODE_IP not in _ip("-4", "addr", "show", "dev", BRIDGE).stdout:
        _ip("addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")
    # Pod-to-Service-to-pod traffic on one bridge must pass kube-proxy's rules.
    Path("/proc/sys/net/bridge/bridge-nf-call-iptables").write_text("1\n")


def remove_bridge() -> None:
    _ip("link", "delete", BRIDGE, check=False)


def node_owner() -> Path | None:
    """The state directory of the cluster whose node runs on this machine, if any."""
    try:
        owner = Path(NODE_OWNER.read_text().strip())
    except OSError:
        return None
    alive = any(
        procs.recorded_alive(owner / "pids" / f"{name}.pid") for name in ("containerd", "kubelet")
    )
    return owner if alive else None


def claim_node(state_root: Path) -> None:
    """Record this state directory as the machine's node owner."""
    NODE_OWNER.parent.mkdir(parents=True, exist_ok=True)
    NODE_OWNER.write_text(f"{state_root}\n")


def release_node(state_root: Path) -> None:
    with contextlib.suppress(OSError):
        if Path(NODE_OWNER.read_text().strip()) == state_root:
            NODE_OWNER.unlink()


def ctr(paths: NodePaths, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ctr", f"--address={paths.containerd_socket}", "--namespace=k8s.io", *args],
        capture_output=True,
        text=True,
    )


def import_image(paths: NodePaths, image: Any) -> None:
    """Import an image's OCI archive unless containerd already has it by digest; the
    digest reference (repository@sha256:...) is created too, so pods can pin it."""
    have = set(ctr(paths, "images", "list", "--quiet").stdout.split())
    if image.ref in have and image.pinned in have:
        return
    for argv in (
        ["images", "import", image.archive],
        ["images", "tag", "--force", image.ref, image.pinned],
    ):
        proc = ctr(paths, *argv)
        if proc.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(argv)} failed:\n{proc.stderr}")


def tag_references(published_ref: str) -> list[str]:
    """The tag references a published image has on the node: its registry's, and the
    mirrored registry's name for the same path."""
    path_and_tag = published_ref.split("/", 1)[1]
    return [published_ref, f"{MIRRORED_REGISTRY}/{path_and_tag}"]


def forget_stale_tags(paths: NodePaths, published: dict[str, str]) -> list[str]:
    """Remove the node's tag references (of `tag_references`) that name another manifest
    than the one just published (ref -> digest), so the next pod that names the tag pulls
    the current image: `IfNotPresent` then means what it says. Returns what was removed."""
    listed = ctr(paths, "images", "list").stdout.splitlines()[1:]
    have = {line.split()[0]: line.split()[2] for line in listed if len(line.split()) > 2}
    stale = [
        ref
        for published_ref, digest in published.items()
        for ref in tag_references(published_ref)
        if ref in have and have[ref] != digest
    ]
    if stale:
        proc = ctr(paths, "images", "remove", *stale)
        if proc.returncode != 0:
            raise RuntimeError(f"ctr images remove {' '.join(stale)} failed:\n{proc.stderr}")
    return stale


def remove_pod_sandboxes(paths: NodePaths, crictl: Path) -> None:
    """Stop and remove every pod sandbox through CRI (containers, CNI teardown, network
    namespaces), while containerd still runs."""
    if not paths.containerd_socket.exists():
        return
    subprocess.run(
        [
            str(crictl),
            f"--runtime-endpoint={paths.runtime_endpoint}",
            "--timeout=20s",
            "rmp",
            "--all",
            "--force",
        ],
        capture_output=True,
        text=True,
    )


def kill_leftovers(paths: NodePaths) -> None:
    """What a crash may leave: container processes (by the node's cgroups), runc shims of
    this containerd (by their -address argument), then mounts under the node's folder."""
    for pid in _cgroup_pids(KUBEPODS_CGROUP):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    for pid in procs.with_cmdline(f"-address {paths.containerd_socket}"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    unmount_under(paths.root)


def _cgroup_pids(root: Path) -> list[int]:
    pids: list[int] = []
    if root.is_dir():
        for procs_file in root.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids += [int(p) for p in procs_file.read_text().split()]
    return pids


def unmount_under(root: Path) -> None:
    """Unmount every mount point below `root`, deepest first."""
    prefix = f"{root}/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            points.append(point)
    for point in sorted(set(points), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True)


def remove_kube_chains() -> None:
    """Remove the iptables chains kube-proxy and the kubelet made (all named KUBE-*) and
    the rules that jump to them, in every table, for IPv4 and IPv6."""
    for command in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            saved = subprocess.run(
                [f"{command}-save", "-t", table], capture_output=True, text=True
            ).stdout.splitlines()
            chains = [line[1:].split()[0] for line in saved if line.startswith(":KUBE-")]
            for line in saved:
                words = shlex.split(line)
                if words[:1] == ["-A"] and not words[1].startswith("KUBE-") and "KUBE-" in line:
                    _iptables(command, table, "-D", *words[1:])
            for flag in ("-F", "-X"):
                for chain in chains:
                    _iptables(command, table, flag, chain)


def _iptables(command: str, table: str, *args: str) -> None:
    subprocess.run([command, "-t", table, *args], capture_output=True)


def remove_cgroups(root: Path = KUBEPODS_CGROUP.parent.parent) -> None:
    """Remove the kubelet's (empty, once its pods are gone) kubepods cgroups, deepest
    first, in every cgroup v1 hierarchy."""
    for hierarchy in root.iterdir():
        tree = hierarchy / KUBEPODS_CGROUP.name
        if tree.is_dir() and not tree.is_symlink():
            for cgroup in sorted(
                (d for d in tree.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True
            ):
                with contextlib.suppress(OSError):
                    cgroup.rmdir()
            with contextlib.suppress(OSError):
                tree.rmdir()
