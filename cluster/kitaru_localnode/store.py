"""The local cluster's S3 store: versitygw run the way a kind user runs it, as a pod.

The pod, its Service, PersistentVolumeClaim and bucket come from the chart's own
`store.deploy` template (`helm template --show-only templates/store.yaml`), so the
local cluster runs exactly what `store.deploy: true` gives a kind user. What only the
local node needs is added here: a local PersistentVolume on the state directory (there
is no volume provisioner), the credentials Secret (generated once, kept in the state
directory, so they survive `down`/`up`), and a NodePort on the node's address, through
which the host (the CLI and a hand-started operator) and pods reach it alike.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kitaru_localnode.images import STORE_USER, BuiltImage
from kitaru_localnode.pki import NODE_IP, NODE_NAME

NAMESPACE = "kitaru-system"
# The chart's names with `fullnameOverride=kitaru`: kitaru-store (Deployment, Service,
# PVC); the Secret is ours (`store.secretRef`).
RELEASE = "kitaru"
NAME = f"{RELEASE}-store"
SECRET = f"{NAME}-credentials"
NODE_PORT = 30070
SERVICE_PORT = 7070
BUCKET = "kitaru"
PREFIX = "local/"
REGION = "us-east-1"
CAPACITY = "10Gi"
ACCESS_KEY_ENV = "AWS_ACCESS_KEY_ID"
SECRET_KEY_ENV = "AWS_SECRET_ACCESS_KEY"


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str


class StoreDirs:
    """The store's part of a cluster's state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root / "store"
        self.data = self.root / "data"
        self.credentials = self.root / "credentials.json"


def endpoint() -> str:
    """Where the host and pods reach the store: the NodePort on the node's address."""
    return f"http://{NODE_IP}:{NODE_PORT}"


def in_cluster_endpoint() -> str:
    """The Service's cluster DNS name (pods only)."""
    return f"http://{NAME}.{NAMESPACE}.svc.cluster.local:{SERVICE_PORT}"


def credentials(dirs: StoreDirs) -> Credentials:
    """The store's root credentials: made once (mode 0600), then reused."""
    if dirs.credentials.exists():
        return Credentials(**json.loads(dirs.credentials.read_text()))
    alphabet = string.ascii_uppercase + string.digits
    made = Credentials(
        access_key_id="".join(secrets.choice(alphabet) for _ in range(20)),
        secret_access_key=secrets.token_urlsafe(30),
    )
    dirs.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(dirs.credentials, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(made.__dict__, out)
    return made


def env_lines(creds: Credentials) -> list[str]:
    """What `source .cluster/env` sets for a hand-started operator and the client."""
    return [
        f"export KITARU_STORE_ENDPOINT={endpoint()}",
        f"export KITARU_STORE_BUCKET={BUCKET}",
        f"export KITARU_STORE_PREFIX={PREFIX}",
        f"export KITARU_STORE_REGION={REGION}",
        f"export KITARU_STORE_ACCESS_KEY_ID={creds.access_key_id}",
        f"export KITARU_STORE_SECRET_ACCESS_KEY={creds.secret_access_key}",
    ]


def chart_values(image: BuiltImage) -> dict[str, Any]:
    """The chart's `store.deploy` values for the local node."""
    return {
        "fullnameOverride": RELEASE,
        "store": {
            "deploy": True,
            "bucket": BUCKET,
            "prefix": PREFIX,
            "region": REGION,
            "secretRef": SECRET,
            "image": {"repository": image.ref.rsplit(":", 1)[0], "digest": image.digest},
            "persistence": {"storageClassName": "", "volumeName": NAME, "size": CAPACITY},
            "service": {"type": "NodePort", "port": SERVICE_PORT, "nodePort": NODE_PORT},
        },
    }


def render_chart(helm: Path, chart: Path, values: dict[str, Any], env: dict[str, str]) -> list[Any]:
    """The chart's store objects for `values` (JSON is YAML: `--values /dev/stdin`)."""
    proc = subprocess.run(
        [
            str(helm),
            "template",
            RELEASE,
            str(chart),
            f"--namespace={NAMESPACE}",
            "--show-only=templates/store.yaml",
            "--values=/dev/stdin",
        ],
        input=json.dumps(values),
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"helm template of the chart's store failed:\n{proc.stderr}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def node_objects(dirs: StoreDirs, creds: Credentials) -> list[dict[str, Any]]:
    """The namespace (enforcing Pod Security `restricted`), the local PersistentVolume
    (claimed by the chart's PVC only) and the credentials Secret."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            # Pod Security `restricted`, as the chart's store must run anywhere.
            "metadata": {
                "name": NAMESPACE,
                "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": NAME},
            "spec": {
                "capacity": {"storage": CAPACITY},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "volumeMode": "Filesystem",
                "claimRef": {"namespace": NAMESPACE, "name": NAME},
                "local": {"path": str(dirs.data)},
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.io/hostname",
                                        "operator": "In",
                                        "values": [NODE_NAME],
                                    }
                                ]
                            }
                        ]
                    }
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": NAMESPACE},
            "type": "Opaque",
            "stringData": {
                ACCESS_KEY_ENV: creds.access_key_id,
                SECRET_KEY_ENV: creds.secret_access_key,
            },
        },
    ]


def prepare_volume(dirs: StoreDirs) -> None:
    """The volume's folder, owned by the store's numeric user (a local volume is
    bind-mounted as it is)."""
    dirs.data.mkdir(parents=True, exist_ok=True)
    uid, gid = (int(part) for part in STORE_USER.split(":"))
    os.chown(dirs.data, uid, gid)
    dirs.data.chmod(0o750)


def answers() -> bool:
    """The store's health endpoint answers through the NodePort."""
    try:
        with urllib.request.urlopen(f"{endpoint()}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False
