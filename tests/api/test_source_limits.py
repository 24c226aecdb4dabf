"""The source snapshot's limits (kitaru.core.sources) against the real API server and etcd:
what the client accepts is stored, and its refusals start where the server's do."""

from __future__ import annotations

import kubernetes
import pytest
from kitaru.core.jobs import source_sha256
from kitaru.core.manifests import build_source_config_map
from kitaru.core.sources import (
    DATA_LIMIT,
    ETCD_REQUEST_LIMIT,
    SourceTooLarge,
    check_source,
    data_size,
    stored_size,
)
from kubernetes.client.rest import ApiException


def create(k8s: kubernetes.client.ApiClient, namespace: str, files: dict[str, bytes]) -> None:
    body = build_source_config_map("limits", files, source_sha256(files))
    kubernetes.client.CoreV1Api(k8s).create_namespaced_config_map(namespace, body)


def test_the_data_limit_is_the_api_servers(
    k8s: kubernetes.client.ApiClient, namespace: str
) -> None:
    """Text and binary at exactly 1 MiB with the manifest are stored; a byte more is
    refused by the client and, had it gone on, by the API server."""
    edge = DATA_LIMIT - data_size({"flow.py": 0, "model.bin": 0})
    files = {"flow.py": b"x" * (edge // 2), "model.bin": b"\xff" * (edge - edge // 2)}
    check_source({path: len(content) for path, content in files.items()})
    create(k8s, namespace, files)
    files["model.bin"] += b"\xff"
    with pytest.raises(SourceTooLarge):
        check_source({path: len(content) for path, content in files.items()})
    with pytest.raises(ApiException) as refused:
        create(k8s, namespace, files)
    assert refused.value.status == 422 and "may not be more than 1048576 bytes" in str(
        refused.value.body
    )


def long_names(count: int, size: int) -> dict[str, bytes]:
    return {f"{i:04d}/" + "n" * 222 + ".py": b"v" * size for i in range(count)}


def at_the_edge(count: int) -> dict[str, int]:
    """`count` files with 230-character names, and one more filling the API server's limit."""
    sizes = {path: 1 for path in long_names(count, 0)}
    return {**sizes, "weights.bin": DATA_LIMIT - data_size({**sizes, "weights.bin": 0})}


def test_many_long_names_fit_etcd_up_to_the_estimate(
    k8s: kubernetes.client.ApiClient, namespace: str
) -> None:
    """The most such files the estimate accepts, beside as much data as the API server
    takes, are stored by etcd: the estimate errs on the safe side."""
    low, high = 1, 5000
    while low < high:
        middle = (low + high + 1) // 2
        fits = stored_size(at_the_edge(middle)) <= ETCD_REQUEST_LIMIT
        low, high = (middle, high) if fits else (low, middle - 1)
    sizes = at_the_edge(low)
    check_source(sizes)
    create(k8s, namespace, {path: b"v" * size for path, size in sizes.items()})
    with pytest.raises(SourceTooLarge):
        check_source(at_the_edge(low + 1))


def test_etcd_refuses_what_the_estimate_refuses(
    k8s: kubernetes.client.ApiClient, namespace: str
) -> None:
    """2 500 files with 230-character names: under the API server's 1 MiB, over etcd's
    request limit. The client says so before uploading; etcd would have refused it."""
    files = long_names(2500, 100)
    sizes = {p: len(c) for p, c in files.items()}
    assert data_size(sizes) <= DATA_LIMIT
    with pytest.raises(SourceTooLarge, match=r"etcd takes at most 1\.5 MiB"):
        check_source(sizes)
    with pytest.raises(ApiException) as refused:
        create(k8s, namespace, files)
    assert "request is too large" in str(refused.value.body)
