"""Test flows. Plain functions: the runner calls `getattr(obj, "func", obj)`, so the
test does not depend on the SDK's `@flow` decorator."""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path


def research_agent(topic: str, depth: int = 1) -> dict:
    return {"summary": f"{topic} researched to depth {depth}", "topic": topic, "depth": depth}


def raiser(reason: str = "boom") -> None:
    raise RuntimeError(f"flow failed: {reason}")


def sleeper(seconds: float = 60) -> str:
    time.sleep(seconds)
    return "woke up"


def flaky(counter: str, succeed_on: int = 3) -> dict:
    """Fails until it has been called `succeed_on` times. Each attempt is a new pod, so
    the count lives in the ConfigMap `counter` of the run's namespace, read and written
    with the pod's service-account token (the test grants the access)."""
    attempt = _count_attempt(counter)
    if attempt < succeed_on:
        raise ConnectionError(f"attempt {attempt} failed")
    return {"attempt": attempt}


def _count_attempt(configmap: str) -> int:
    sa = Path("/var/run/secrets/kubernetes.io/serviceaccount")
    namespace = (sa / "namespace").read_text()
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
    base = f"https://{host}:{port}/api/v1/namespaces/{namespace}/configmaps"
    ctx = ssl.create_default_context(cafile=str(sa / "ca.crt"))
    headers = {"Authorization": f"Bearer {(sa / 'token').read_text()}"}

    def call(method: str, url: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            url, data, {**headers, "Content-Type": "application/json"}, method=method
        )
        with urllib.request.urlopen(request, context=ctx, timeout=10) as response:
            result: dict = json.load(response)
            return result

    try:
        current = call("GET", f"{base}/{configmap}")
    except urllib.error.HTTPError as err:
        if err.code != 404:
            raise
        call("POST", base, {"metadata": {"name": configmap}, "data": {"attempt": "1"}})
        return 1
    attempt = int(current["data"]["attempt"]) + 1
    current["data"]["attempt"] = str(attempt)  # resourceVersion kept: a conflict fails loudly
    call("PUT", f"{base}/{configmap}", current)
    return attempt


def square(n: int) -> int:
    return n * n
