"""Kitaru on Kubernetes: durable Python flows with versioned deployments and routing tags.

    from kitaru import flow, KitaruClient

Attributes are imported on first use, so `import kitaru` (and `kitaru --help`)
stays fast: the Kubernetes client loads only when something talks to the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kitaru._lazy import lazy_getattr

if TYPE_CHECKING:
    from kitaru.client import (
        DeploymentInfo,
        ExecutionFailed,
        ExecutionHandle,
        KitaruClient,
        KitaruError,
    )
    from kitaru.core.retention import Retention
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
    "Retention": "kitaru.core.retention",
}

__all__ = [
    "Deployment",
    "DeploymentInfo",
    "ExecutionFailed",
    "ExecutionHandle",
    "Flow",
    "KitaruClient",
    "KitaruError",
    "Retention",
    "flow",
]

__getattr__ = lazy_getattr(globals(), _LAZY)
