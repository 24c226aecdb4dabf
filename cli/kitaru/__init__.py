"""Kitaru on Kubernetes: durable Python flows with versioned deployments and routing tags.

    from kitaru import flow, KitaruClient

Attributes are imported on first use, so `import kitaru` (and `kitaru --help`)
stays fast: the Kubernetes client loads only when something talks to the server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kitaru.client import (
        DeploymentInfo,
        ExecutionFailed,
        ExecutionHandle,
        KitaruClient,
        KitaruError,
    )
    from kitaru.sdk import Deployment, Flow, flow

_LAZY = {
    "flow": "kitaru.sdk",
    "Flow": "kitaru.sdk",
    "Deployment": "kitaru.sdk",
    "KitaruClient": "kitaru.client",
    "ExecutionHandle": "kitaru.client",
    "ExecutionFailed": "kitaru.client",
    "KitaruError": "kitaru.client",
    "DeploymentInfo": "kitaru.client",
}

__all__ = [
    "Deployment",
    "DeploymentInfo",
    "ExecutionFailed",
    "ExecutionHandle",
    "Flow",
    "KitaruClient",
    "KitaruError",
    "flow",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kitaru' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
