"""The local node's configuration builders and certificates: what this machine kind
needs (cgroupfs on cgroup v1, swap, no CAP_SYS_RESOURCE) and that nothing listens
beyond the node's bridge address and loopback."""

from __future__ import annotations

import tomllib
from pathlib import Path

from cryptography import x509
from kitaru_localnode import node
from kitaru_localnode.pki import NODE_IP, ensure_pki

REGISTRY = f"{NODE_IP}:5001"
PORTS = {
    "kubelet": 10250,
    "kubelet-healthz": 10248,
    "kube-proxy-healthz": 10256,
    "kube-proxy-metrics": 10249,
    "coredns-ready": 8181,
}


def test_containerd_runs_runc_through_cri_on_its_own_socket(tmp_path: Path) -> None:
    paths = node.NodePaths(tmp_path)
    config = tomllib.loads(node.build_containerd_config(paths, "kitaru.local/pause:k"))
    assert config["grpc"]["address"] == str(paths.containerd_socket)
    assert config["root"].startswith(str(tmp_path))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True  # no CAP_SYS_RESOURCE here
    assert cri["sandbox_image"] == "kitaru.local/pause:k"
    assert cri["stream_server_address"] == "127.0.0.1"
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["options"] == {"BinaryName": str(node.RUNC), "SystemdCgroup": False}
    assert cri["cni"]["conf_dir"] == str(paths.cni_conf_dir)


def test_pods_live_on_the_bridge_whose_gateway_is_the_node(tmp_path: Path) -> None:
    (bridge,) = node.build_cni_config(node.NodePaths(tmp_path))["plugins"]
    assert (bridge["type"], bridge["bridge"]) == ("bridge", node.BRIDGE)
    assert bridge["ipMasq"] is False  # pods talk to the node and each other only
    (range_,) = bridge["ipam"]["ranges"][0]
    assert range_ == {"subnet": node.POD_CIDR, "gateway": NODE_IP}


def test_kubelet_fits_this_machine_and_trusts_only_the_cluster_ca(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    config = node.build_kubelet_config(node.NodePaths(tmp_path), pki, 10250, 10248)
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["failSwapOn"] is False
    assert config["failCgroupV1"] is False
    assert (config["address"], config["healthzBindAddress"]) == (NODE_IP, "127.0.0.1")
    assert config["readOnlyPort"] == 0
    assert config["authentication"]["anonymous"] == {"enabled": False}
    assert config["authentication"]["x509"] == {"clientCAFile": str(pki / "ca.crt")}
    assert config["tlsCertFile"] == str(pki / "kubelet-serving.crt")
    assert config["clusterDNS"] == [NODE_IP]
    assert config["imageGCHighThresholdPercent"] == 100  # local images cannot be pulled


def test_kube_proxy_and_coredns_listen_on_the_node_or_loopback(tmp_path: Path) -> None:
    proxy = node.build_kube_proxy_config(tmp_path / "kp.kubeconfig", 10256, 10249)
    assert proxy["nodePortAddresses"] == [f"{NODE_IP}/32"]
    assert proxy["healthzBindAddress"].startswith("127.0.0.1:")
    assert proxy["metricsBindAddress"].startswith("127.0.0.1:")
    corefile = node.build_corefile(tmp_path / "dns.kubeconfig", 8181)
    assert f"bind {NODE_IP}" in corefile
    assert "ready 127.0.0.1:8181" in corefile
    assert "forward" not in corefile  # no upstream: nothing else is reached


def test_write_configs_lays_out_the_node_folder(tmp_path: Path) -> None:
    paths = node.NodePaths(tmp_path)
    node.write_configs(paths, tmp_path / "pki", tmp_path / "kc", PORTS, "pause:1", REGISTRY)
    for path in (
        paths.containerd_config,
        paths.kubelet_config,
        paths.kube_proxy_config,
        paths.corefile,
        paths.cni_conf_dir / "10-kitaru.conflist",
        paths.registry_hosts / REGISTRY / "hosts.toml",
        paths.registry_hosts / "ghcr.io" / "hosts.toml",
    ):
        assert path.is_file(), path


def test_containerd_pulls_from_the_local_registry_only(tmp_path: Path) -> None:
    """The registry over plain HTTP, and as the mirror of the registry the project's
    images are published to; the upstream stays behind the closed proxy."""
    paths = node.NodePaths(tmp_path)
    config = tomllib.loads(node.build_containerd_config(paths, "pause:1"))
    registry_config = config["plugins"]["io.containerd.grpc.v1.cri"]["registry"]
    assert registry_config == {"config_path": str(paths.registry_hosts)}
    hosts = {n: tomllib.loads(text) for n, text in node.build_registry_hosts(REGISTRY).items()}
    local = {f"http://{REGISTRY}": {"capabilities": ["pull", "resolve"]}}
    assert hosts[REGISTRY] == {"server": f"http://{REGISTRY}", "host": local}
    assert hosts["ghcr.io"] == {"server": "https://ghcr.io", "host": local}
    assert node.CLOSED_PROXY_ENV["HTTPS_PROXY"] == "http://127.0.0.1:9"
    assert node.CLOSED_PROXY_ENV["NO_PROXY"] == NODE_IP


def test_a_published_image_is_known_by_its_registry_and_mirror_tags() -> None:
    assert node.tag_references(f"{REGISTRY}/kitaru-k8s/runner:0.1.0") == [
        f"{REGISTRY}/kitaru-k8s/runner:0.1.0",
        "ghcr.io/kitaru-k8s/runner:0.1.0",
    ]


def _sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(ip) for ip in alt.get_values_for_type(x509.IPAddress)}


def test_pki_adds_what_is_missing_and_keeps_the_ca(tmp_path: Path) -> None:
    ensure_pki(tmp_path)
    ca = (tmp_path / "ca.crt").read_bytes()
    assert {NODE_IP, "127.0.0.1", "10.96.0.1"} <= _sans(tmp_path / "apiserver.crt")
    assert NODE_IP in _sans(tmp_path / "kubelet-serving.crt")
    admin = (tmp_path / "admin.crt").read_bytes()
    (tmp_path / "kube-proxy.crt").unlink()
    ensure_pki(tmp_path)
    assert (tmp_path / "kube-proxy.crt").exists()
    assert (tmp_path / "ca.crt").read_bytes() == ca
    assert (tmp_path / "admin.crt").read_bytes() == admin  # kubeconfigs stay valid
