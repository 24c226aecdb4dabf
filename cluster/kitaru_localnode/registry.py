"""The local image registry: CNCF Distribution beside the node, the way a kind user runs
a `kind-registry` container beside kind's node.

It serves plain HTTP on the node's address (containerd, the host and pods reach it
there; nothing listens on the machine's own interface) and keeps its blobs under the
cluster's state directory. `cluster up` and `make images` push the project's images to
it and the node pulls them from it; the chart is pushed there as an OCI artifact.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kitaru_localnode.images import Builder, BuiltImage, LocalImage
from kitaru_localnode.pki import NODE_IP

# kind's documented local registry listens on the host's port 5001.
DEFAULT_PORT = 5001
CHART_REPOSITORY = "charts"
# What a registry answers a manifest request with, whichever format the image has.
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
# The registry's OpenTelemetry exporter would send traces to localhost:4318.
ENV = {"OTEL_TRACES_EXPORTER": "none"}


def address(port: int) -> str:
    return f"{NODE_IP}:{port}"


def build_config(data_dir: Path, registry: str) -> dict[str, Any]:
    """Distribution's configuration (JSON is YAML): filesystem storage, deletes allowed
    (so a stale tag can be replaced and garbage collected), no upload purging."""
    return {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(data_dir)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": registry, "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }


def answers(registry: str) -> bool:
    """The registry serves the distribution API (GET /v2/ is 200 without auth)."""
    try:
        with urllib.request.urlopen(f"http://{registry}/v2/", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False


def manifest_digest(registry: str, path: str, reference: str) -> str | None:
    """The digest the registry serves for `path:reference` (a tag or digest), or None."""
    request = urllib.request.Request(
        f"http://{registry}/v2/{path}/manifests/{reference}",
        method="HEAD",
        headers={"Accept": MANIFEST_TYPES},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            digest: str | None = response.headers.get("Docker-Content-Digest")
            return digest
    except (urllib.error.HTTPError, OSError):
        return None


def publish_images(
    builder: Builder, images: dict[str, LocalImage], registry: str, record: Path
) -> dict[str, BuiltImage]:
    """Push each image unless the registry's tag already names the manifest pushed for
    the same build (recorded per buildah image in `record`): an unchanged image keeps
    its digest, and `up` stays fast."""
    try:
        pushed: dict[str, str] = json.loads(record.read_text())
    except (OSError, ValueError):
        pushed = {}
    published: dict[str, BuiltImage] = {}
    for name, image in images.items():
        digest = pushed.get(image.local)
        if digest and manifest_digest(registry, image.path, image.tag) == digest:
            published[name] = BuiltImage(ref=f"{registry}/{image.path}:{image.tag}", digest=digest)
            continue
        published[name] = builder.push(image, registry)
        pushed[image.local] = published[name].digest
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(pushed, indent=2) + "\n")
    return published


def helm_env(home: Path) -> dict[str, str]:
    """helm's environment with its caches and registry settings under `home`."""
    return {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def push_chart(helm: Path, chart: Path, registry: str, env: dict[str, str]) -> str:
    """`helm package` the chart and `helm push` it to `oci://<registry>/charts`; returns
    the chart's reference pinned by digest (oci://…/charts/<name>@sha256:…)."""

    def run(*args: str) -> str:
        proc = subprocess.run([str(helm), *args], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc.stdout + proc.stderr

    with tempfile.TemporaryDirectory() as tmp:
        packaged = run("package", str(chart), "--destination", tmp)
        (archive,) = Path(tmp).glob("*.tgz")
        out = run("push", str(archive), f"oci://{registry}/{CHART_REPOSITORY}", "--plain-http")
    name = re.search(r"Pushed: (\S+):[^:\s]+\n", out)
    digest = re.search(r"Digest: (sha256:[0-9a-f]{64})", out)
    if not (name and digest):
        raise RuntimeError(f"helm push printed no reference and digest:\n{packaged}{out}")
    return f"oci://{name.group(1)}@{digest.group(1)}"
