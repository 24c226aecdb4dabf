"""The local cluster's registry and store, as configuration: where they listen, what the
node's volume and Secret hold, what `source .cluster/env` sets. (They run for real in
tests/cluster/test_store_registry.py.)"""

from __future__ import annotations

import socket
import stat
from pathlib import Path

from kitaru_localnode import cluster, images, registry, store
from kitaru_localnode.images import BuiltImage
from kitaru_localnode.pki import NODE_IP

DIGEST = "sha256:" + "c" * 64


def test_the_registry_serves_on_the_node_address_from_the_state_directory(tmp_path: Path) -> None:
    config = registry.build_config(tmp_path / "data", registry.address(5001))
    assert config["http"]["addr"] == f"{NODE_IP}:5001"
    assert config["storage"]["filesystem"] == {"rootdirectory": str(tmp_path / "data")}
    assert config["storage"]["delete"] == {"enabled": True}
    assert registry.ENV == {"OTEL_TRACES_EXPORTER": "none"}  # no traces sent anywhere


def test_the_registry_port_is_kinds_when_free_and_kept_across_runs() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]
        ports = cluster.choose_ports({"registry": busy})
        assert ports["registry"] != busy
    assert cluster.PREFERRED_PORTS["registry"] == 5001
    again = cluster.choose_ports(ports)
    assert again["registry"] == ports["registry"]


def test_the_store_image_version_is_pinned_beside_the_cluster() -> None:
    assert images.pinned_version("VERSITYGW_VERSION") == "v1.8.0"
    assert images.pinned_version("DISTRIBUTION_VERSION").startswith("v3.")


def test_credentials_are_made_once_and_readable_by_their_owner_only(tmp_path: Path) -> None:
    dirs = store.StoreDirs(tmp_path)
    made = store.credentials(dirs)
    assert len(made.access_key_id) == 20 and made.access_key_id.isupper()
    assert len(made.secret_access_key) >= 40
    assert stat.S_IMODE(dirs.credentials.stat().st_mode) == 0o600
    assert store.credentials(dirs) == made


def test_the_chart_values_pin_the_image_and_bind_the_local_volume(tmp_path: Path) -> None:
    image = BuiltImage(ref=f"{NODE_IP}:5001/kitaru-k8s/versitygw:v1.8.0", digest=DIGEST)
    values = store.chart_values(image)["store"]
    assert values["deploy"] is True
    assert values["image"] == {
        "repository": f"{NODE_IP}:5001/kitaru-k8s/versitygw",
        "digest": DIGEST,
    }
    assert values["service"] == {"type": "NodePort", "port": 7070, "nodePort": store.NODE_PORT}
    assert values["secretRef"] == store.SECRET
    dirs = store.StoreDirs(tmp_path)
    objects = {o["kind"]: o for o in store.node_objects(dirs, store.credentials(dirs))}
    volume = objects["PersistentVolume"]["spec"]
    assert volume["local"] == {"path": str(tmp_path / "store" / "data")}
    assert volume["claimRef"] == {"namespace": store.NAMESPACE, "name": store.NAME}
    assert values["persistence"] == {
        "storageClassName": "",
        "volumeName": store.NAME,
        "size": volume["capacity"]["storage"],
    }
    assert volume["persistentVolumeReclaimPolicy"] == "Retain"
    assert set(objects["Secret"]["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_env_names_what_a_hand_started_operator_needs(tmp_path: Path) -> None:
    creds = store.credentials(store.StoreDirs(tmp_path))
    env = dict(line.removeprefix("export ").split("=", 1) for line in store.env_lines(creds))
    assert env == {
        "KITARU_STORE_ENDPOINT": f"http://{NODE_IP}:{store.NODE_PORT}",
        "KITARU_STORE_BUCKET": "kitaru",
        "KITARU_STORE_PREFIX": "local/",
        "KITARU_STORE_REGION": "us-east-1",
        "KITARU_STORE_ACCESS_KEY_ID": creds.access_key_id,
        "KITARU_STORE_SECRET_ACCESS_KEY": creds.secret_access_key,
    }
