"""What the benchmark scripts share: a light asyncio client from the kubeconfig,
percentiles, and waiting for the previous case's namespaces to be gone."""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes import client, config

REPO = Path(__file__).resolve().parents[1]
KUBECONFIG = os.environ.get("KUBECONFIG", str(REPO / ".cluster" / "kubeconfig"))
G, V = "kitaru.dev", "v1alpha1"
KITARU = f"/apis/{G}/{V}"


def configuration() -> client.Configuration:
    cfg = client.Configuration()
    config.load_kube_config(config_file=KUBECONFIG, client_configuration=cfg)
    cfg.connection_pool_maxsize = 64
    return cfg


def api() -> client.ApiClient:
    return client.ApiClient(configuration())


def session(cfg: client.Configuration, limit: int = 64) -> aiohttp.ClientSession:
    """One aiohttp session with the kubeconfig's credentials: the measuring side stays
    light (no model (de)serialisation), so the CPU goes to what is measured."""
    context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    if cfg.cert_file:
        context.load_cert_chain(cfg.cert_file, cfg.key_file)
    token = cfg.get_api_key_with_prefix("authorization")
    return aiohttp.ClientSession(
        base_url=cfg.host,
        connector=aiohttp.TCPConnector(ssl=context, limit=limit),
        headers={"Authorization": token} if token else {},
        read_bufsize=2**20,
    )


async def request(
    http: aiohttp.ClientSession, method: str, path: str, body: Any = None, **params: str
) -> dict[str, Any]:
    """One call; raises on any non-2xx with the server's message."""
    async with http.request(method, path, json=body, params=params or None) as response:
        data = await response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
        return dict(json.loads(data))


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


def summary(values: list[float]) -> str:
    return f"p50={pct(values, 0.5) * 1000:.0f} ms p99={pct(values, 0.99) * 1000:.0f} ms"


def wait_namespaces_gone(k8s: client.ApiClient, prefix: str, timeout: float = 600) -> None:
    """Wait until no namespace of this prefix (of this or an earlier run) remains: the
    deletion of the last case's objects must not load the next case."""
    core = client.CoreV1Api(k8s)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = json.loads(core.list_namespace(_preload_content=False).data)["items"]
        left = [n for n in listed if n["metadata"]["name"].startswith(prefix)]
        if not left:
            return
        for ns in left:
            if not ns["metadata"].get("deletionTimestamp"):
                core.delete_namespace(ns["metadata"]["name"], propagation_policy="Background")
        time.sleep(1)
    print(f"warning: {prefix}* namespaces still terminating after {timeout:.0f} s", file=sys.stderr)
