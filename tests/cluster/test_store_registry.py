"""The local cluster's object store and image registry are real: versitygw answers S3
from the host and from a pod on the node (puts, gets, conditional puts), the node pulls
images from the registry (the kubelet's events show each pull), the chart is an OCI
artifact there, and both keep their data across `cluster down` / `up`."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import textwrap
import uuid
from pathlib import Path
from typing import Any

import boto3
import botocore
import pytest
import yaml
from botocore.client import Config
from botocore.exceptions import ClientError
from kitaru_localnode import images, registry, store
from kitaru_localnode.paths import cache_dir
from support import (
    CLUSTER_DIR,
    REPO,
    bin_dir,
    cluster_env,
    kubectl,
    localnode,
    node_images,
    runner_image,
    wait_for,
)

RESTRICTED_POD = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def s3_client(endpoint: str | None = None) -> Any:
    """boto3 on the store, configured from what `source .cluster/env` sets."""
    env = cluster_env()
    return boto3.client(
        "s3",
        endpoint_url=endpoint or env["KITARU_STORE_ENDPOINT"],
        region_name=env["KITARU_STORE_REGION"],
        aws_access_key_id=env["KITARU_STORE_ACCESS_KEY_ID"],
        aws_secret_access_key=env["KITARU_STORE_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


def unique_key(what: str) -> str:
    return f"{cluster_env()['KITARU_STORE_PREFIX']}tests/{what}-{uuid.uuid4().hex[:8]}"


def test_put_get_and_conditional_put_from_the_host() -> None:
    s3 = s3_client()
    bucket = cluster_env()["KITARU_STORE_BUCKET"]
    key = unique_key("host")
    s3.put_object(Bucket=bucket, Key=key, Body=b"first")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"first"

    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=bucket, Key=key, Body=b"second", IfNoneMatch="*")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"first"

    created = unique_key("host-conditional")
    s3.put_object(Bucket=bucket, Key=created, Body=b"once", IfNoneMatch="*")
    assert s3.get_object(Bucket=bucket, Key=created)["Body"].read() == b"once"


def test_wrong_credentials_are_refused() -> None:
    env = cluster_env()
    stranger = boto3.client(
        "s3",
        endpoint_url=env["KITARU_STORE_ENDPOINT"],
        region_name=env["KITARU_STORE_REGION"],
        aws_access_key_id=env["KITARU_STORE_ACCESS_KEY_ID"],
        aws_secret_access_key="not-the-secret",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    with pytest.raises(ClientError) as refused:
        stranger.get_object(Bucket=env["KITARU_STORE_BUCKET"], Key="anything")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


# --- from a pod on the node ---------------------------------------------------------

POD_SCRIPT = textwrap.dedent(
    """
    import json, sys, uuid
    import boto3
    from botocore.client import Config
    from botocore.exceptions import ClientError

    env = json.load(sys.stdin)
    results = {}
    for name, endpoint in env["endpoints"].items():
        s3 = boto3.client(
            "s3", endpoint_url=endpoint, region_name=env["region"],
            aws_access_key_id=env["key"], aws_secret_access_key=env["secret"],
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )
        key = f"{env['prefix']}tests/pod-{name}-{uuid.uuid4().hex[:8]}"
        s3.put_object(Bucket=env["bucket"], Key=key, Body=name.encode())
        got = s3.get_object(Bucket=env["bucket"], Key=key)["Body"].read().decode()
        try:
            s3.put_object(Bucket=env["bucket"], Key=key, Body=b"again", IfNoneMatch="*")
            status = 200
        except ClientError as err:
            status = err.response["ResponseMetadata"]["HTTPStatusCode"]
        results[name] = {"key": key, "got": got, "overwrite": status}
    print(json.dumps(results))
    """
)


def _boto3_tar() -> bytes:
    """boto3 and what it imports, from the host's installation, for a pod's PYTHONPATH
    (botocore with the S3 model only: the pod talks to nothing else)."""
    import dateutil
    import jmespath
    import s3transfer
    import six
    import urllib3

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for module in (boto3, botocore, s3transfer, jmespath, dateutil, urllib3):
            root = Path(module.__file__ or "").parent

            def keep(info: tarfile.TarInfo, top: str = root.name) -> tarfile.TarInfo | None:
                parts = Path(info.name).parts
                if "__pycache__" in parts:
                    return None
                if parts[:2] == ("botocore", "data") and len(parts) > 3 and parts[2] != "s3":
                    return None
                return info

            tar.add(root, arcname=root.name, filter=keep)
        tar.add(six.__file__ or "", arcname="six.py")
    return buffer.getvalue()


def test_put_get_and_conditional_put_from_a_pod(namespace: str) -> None:
    """boto3 in a container of the runner image on the node, against the Service's
    cluster DNS name and against the NodePort on the node's address."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "s3-client"},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": RESTRICTED_POD,
            "containers": [
                {
                    "name": "main",
                    "image": runner_image(),
                    "command": ["python", "-c", "import time; time.sleep(600)"],
                    "env": [{"name": "PYTHONPATH", "value": "/opt/s3"}],
                    "securityContext": RESTRICTED_CONTAINER,
                    "volumeMounts": [{"name": "libs", "mountPath": "/opt/s3"}],
                }
            ],
            "volumes": [{"name": "libs", "emptyDir": {}}],
        },
    }
    kubectl("create", "-f", "-", namespace=namespace, input=json.dumps(pod))
    kubectl("wait", "--for=condition=Ready", "pod/s3-client", "--timeout=90s", namespace=namespace)
    argv = [str(bin_dir() / "kubectl"), f"--kubeconfig={CLUSTER_DIR / 'kubeconfig'}"]
    untar = subprocess.run(
        [*argv, "-n", namespace, "exec", "-i", "s3-client", "--", "tar", "-x", "-C", "/opt/s3"],
        input=_boto3_tar(),
        capture_output=True,
        timeout=120,
    )
    assert untar.returncode == 0, untar.stderr

    env = cluster_env()
    settings = {
        "endpoints": {
            "dns": store.in_cluster_endpoint(),
            "node": env["KITARU_STORE_ENDPOINT"],
        },
        "region": env["KITARU_STORE_REGION"],
        "bucket": env["KITARU_STORE_BUCKET"],
        "prefix": env["KITARU_STORE_PREFIX"],
        "key": env["KITARU_STORE_ACCESS_KEY_ID"],
        "secret": env["KITARU_STORE_SECRET_ACCESS_KEY"],
    }
    # The credentials travel on stdin: never in a command line or the pod's spec.
    script = ["python", "-c", POD_SCRIPT]
    done = kubectl(
        "exec", "-i", "s3-client", "--", *script, namespace=namespace, input=json.dumps(settings)
    )
    results = json.loads(done.stdout)
    s3 = s3_client()
    for name in ("dns", "node"):
        assert results[name]["got"] == name
        assert results[name]["overwrite"] == 412
        # What the pod wrote, the host reads.
        stored = s3.get_object(Bucket=env["KITARU_STORE_BUCKET"], Key=results[name]["key"])
        assert stored["Body"].read() == name.encode()


# --- the registry -----------------------------------------------------------------


def _registry() -> str:
    return cluster_env()["KITARU_LOCAL_REGISTRY"]


def _fresh_image() -> images.BuiltImage:
    """An image no node has seen: the pause program with a label of its own, built with
    buildah and pushed to the registry (a new manifest, so the node must pull it)."""
    builder = images.Builder(cache_dir(), REPO, bin_dir())
    name = f"probe-{uuid.uuid4().hex[:8]}"
    local = f"localhost/kitaru-{name}:1"
    container = subprocess.run(
        [*builder.buildah, "from", "scratch"], capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    try:
        for argv in (
            ["copy", container, str(bin_dir() / "pause"), "/pause"],
            [
                "config",
                '--entrypoint=["/pause"]',
                "--user=65535:65535",
                f"--label=kitaru.dev/probe={name}",
                container,
            ],
            ["commit", "-q", container, local],
        ):
            subprocess.run([*builder.buildah, *argv], capture_output=True, check=True)
    finally:
        subprocess.run([*builder.buildah, "rm", container], capture_output=True)
    try:
        return builder.push(images.LocalImage(name, local, f"kitaru-k8s/{name}", "1"), _registry())
    finally:
        subprocess.run([*builder.buildah, "rmi", local], capture_output=True)


def _pause_pod(namespace: str, name: str, image: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "securityContext": RESTRICTED_POD,
            "containers": [
                {"name": "main", "image": image, "securityContext": RESTRICTED_CONTAINER}
            ],
        },
    }
    kubectl("create", "-f", "-", namespace=namespace, input=json.dumps(pod))


def _pulled(namespace: str, pod: str, image: str) -> dict[str, Any]:
    """The running pod's container status, once the kubelet's events say it pulled
    `image` (Pulling, then Pulled with "Successfully pulled image")."""

    def pulled() -> dict[str, Any] | None:
        events = json.loads(
            kubectl(
                "get",
                "events",
                f"--field-selector=involvedObject.name={pod}",
                "-o",
                "json",
                namespace=namespace,
            ).stdout
        )["items"]
        said = {(e["reason"], e["message"].split(" in ")[0]) for e in events}
        if ("Pulling", f'Pulling image "{image}"') not in said:
            return None
        if ("Pulled", f'Successfully pulled image "{image}"') not in said:
            return None
        status = json.loads(kubectl("get", "pod", pod, "-o", "json", namespace=namespace).stdout)
        running = [
            s for s in status["status"].get("containerStatuses", []) if "running" in s["state"]
        ]
        return running[0] if running else None

    found: dict[str, Any] = wait_for(pulled, timeout=90, interval=0.5, message=f"{pod} pulled")
    return found


def _assert_a_fresh_image_is_pulled(namespace: str) -> None:
    fresh = _fresh_image()
    _pause_pod(namespace, "pinned", fresh.pinned)
    assert _pulled(namespace, "pinned", fresh.pinned)["imageID"].endswith(fresh.digest)
    # The same image by the name it is published under (the chart's and the client's
    # default registry): the node resolves it from the local registry, its mirror.
    tag = f"ghcr.io/{fresh.ref.split('/', 1)[1]}"
    _pause_pod(namespace, "by-tag", tag)
    assert _pulled(namespace, "by-tag", tag)["imageID"].endswith(fresh.digest)


def test_the_node_pulls_images_from_the_registry(namespace: str) -> None:
    _assert_a_fresh_image_is_pulled(namespace)
    # The project's images are registry references pinned by digest, and the registry
    # serves exactly those manifests.
    address = _registry()
    for name in ("runner", "operator", "versitygw"):
        image = node_images()[name]
        assert image["pinned"].startswith(f"{address}/kitaru-k8s/{name}@sha256:")
        path, _, tag = image["ref"].removeprefix(f"{address}/").rpartition(":")
        assert registry.manifest_digest(address, path, tag) == image["digest"]
    # Only the pause image is imported (the sandbox needs it before any pull).
    assert node_images()["pause"]["archive"]
    assert not [n for n, i in node_images().items() if n != "pause" and i["archive"]]


def test_an_image_the_registry_lacks_fails_to_pull(namespace: str) -> None:
    """Nothing else is reached: a missing image fails at once with ErrImagePull or
    ImagePullBackOff, whether it names the local registry or the mirrored one."""
    for pod, image in (
        ("local", f"{_registry()}/kitaru-k8s/nothing:1"),
        ("mirrored", "ghcr.io/kitaru-k8s/nothing:1"),
    ):
        _pause_pod(namespace, pod, image)

        def failed(pod: str = pod) -> str | None:
            found = json.loads(kubectl("get", "pod", pod, "-o", "json", namespace=namespace).stdout)
            statuses = found["status"].get("containerStatuses", [])
            reason = statuses[0]["state"].get("waiting", {}).get("reason") if statuses else None
            return reason if reason in ("ErrImagePull", "ImagePullBackOff") else None

        wait_for(failed, timeout=60, interval=0.5, message=f"{image} to fail to pull")


def test_the_chart_is_an_oci_artifact_in_the_registry() -> None:
    chart = f"oci://{_registry()}/{registry.CHART_REPOSITORY}/kitaru-operator"
    shown = subprocess.run(
        [str(bin_dir() / "helm"), "show", "chart", chart, "--plain-http"],
        capture_output=True,
        text=True,
        env=registry.helm_env(Path("/tmp/kitaru-helm")),
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    pulled = yaml.safe_load(shown.stdout)
    checkout = yaml.safe_load((REPO / "charts" / "kitaru-operator" / "Chart.yaml").read_text())
    assert (pulled["name"], pulled["version"]) == (checkout["name"], checkout["version"])


# --- down and up ----------------------------------------------------------------------


def test_down_and_up_keep_the_store_and_the_registry(namespace: str) -> None:
    """The store's objects live on its volume and the registry's blobs under the state
    directory: after `cluster down` and `up` both serve what they had, and still work."""
    s3 = s3_client()
    bucket = cluster_env()["KITARU_STORE_BUCKET"]
    key = unique_key("across-restarts")
    s3.put_object(Bucket=bucket, Key=key, Body=b"kept")
    images_before = node_images()

    down = localnode("cluster", "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not store.answers()
    assert not registry.answers(_registry())
    up = localnode("cluster", "up")
    assert up.returncode == 0, up.stdout + up.stderr

    assert node_images() == images_before  # nothing rebuilt, nothing pushed anew
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"kept"
    s3.put_object(Bucket=bucket, Key=unique_key("after-up"), Body=b"new")
    _assert_a_fresh_image_is_pulled(namespace)
