"""Helpers shared by every test tier: deadline-bounded polling and the pinned kubectl."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[1]
CLUSTER_DIR = REPO / ".cluster"
KUBECONFIG = CLUSTER_DIR / "kubeconfig"

T = TypeVar("T")


def wait_for(
    fn: Callable[[], T], timeout: float = 60.0, interval: float = 0.05, message: str = ""
) -> T:
    """Poll `fn` until it returns something truthy and return that; fail at the deadline
    with the last value (or exception) seen. The only way tests wait."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = value = fn()
            if value:
                return value
        except Exception as err:  # a not-yet-existing object, a transient API error...
            last = err
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {message or fn!r}; last: {last!r}"
            )
        time.sleep(interval)


def bin_dir(cluster_dir: Path = CLUSTER_DIR) -> Path:
    """The pinned binaries: from the cluster's env file, else from the (cached) build."""
    env_file = cluster_dir / "env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            if line.startswith("export KITARU_BIN_DIR="):
                return Path(line.split("=", 1)[1])
    out = subprocess.run(
        ["bash", str(REPO / "cluster" / "build.sh")], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    return Path(out.strip().splitlines()[-1])


def kubectl(
    *args: str,
    namespace: str | None = None,
    check: bool = True,
    input: str | None = None,
    kubeconfig: Path = KUBECONFIG,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run the pinned kubectl against the local cluster; output is captured as text."""
    # Global flags first: everything after a `--` in args belongs to a container command.
    argv = [str(bin_dir() / "kubectl"), *(["--namespace", namespace] if namespace else []), *args]
    proc = subprocess.run(
        argv,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )
    return proc
