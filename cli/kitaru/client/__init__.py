"""The client layer: the only code that talks to the API server for users.

The CLI, the SDK and the MCP server all go through `KitaruClient`:

    from kitaru.client import KitaruClient

    client = KitaruClient()                      # the active connection
    client.deployments.deploy("flows/research.py:research_agent", inputs={...})
    handle = client.deployments.invoke("research_agent", tag="stable", inputs={...})
    handle.wait()

Every failure is a `KitaruError` (`.message`, `.kind`). Names are imported on first
use, so importing `kitaru.client.errors` (as the CLI does at start) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kitaru._lazy import lazy_getattr

if TYPE_CHECKING:
    from kitaru.client.client import DEFAULT_SERVICE_ACCOUNT, KitaruClient
    from kitaru.client.connection import Connection, Setting, resolve_connection
    from kitaru.client.deployments import Deployments
    from kitaru.client.errors import (
        AuthenticationError,
        Conflict,
        ExecutionFailed,
        ExecutionTimeout,
        InvalidArguments,
        KitaruConnectionError,
        KitaruError,
        NotFound,
        Rejected,
        ResolutionFailed,
    )
    from kitaru.client.executions import Executions
    from kitaru.client.handle import ExecutionHandle
    from kitaru.client.promotions import PromotionInfo
    from kitaru.client.records import DeploymentInfo, ExecutionInfo, FlowSummary, RouteInfo, Tag
    from kitaru.client.schedules import ScheduleInfo, Schedules

_LAZY = {
    "DEFAULT_SERVICE_ACCOUNT": "kitaru.client.client",
    "KitaruClient": "kitaru.client.client",
    "Connection": "kitaru.client.connection",
    "Setting": "kitaru.client.connection",
    "resolve_connection": "kitaru.client.connection",
    "Deployments": "kitaru.client.deployments",
    "AuthenticationError": "kitaru.client.errors",
    "Conflict": "kitaru.client.errors",
    "ExecutionFailed": "kitaru.client.errors",
    "ExecutionTimeout": "kitaru.client.errors",
    "InvalidArguments": "kitaru.client.errors",
    "KitaruConnectionError": "kitaru.client.errors",
    "KitaruError": "kitaru.client.errors",
    "NotFound": "kitaru.client.errors",
    "Rejected": "kitaru.client.errors",
    "ResolutionFailed": "kitaru.client.errors",
    "Executions": "kitaru.client.executions",
    "ExecutionHandle": "kitaru.client.handle",
    "PromotionInfo": "kitaru.client.promotions",
    "DeploymentInfo": "kitaru.client.records",
    "ExecutionInfo": "kitaru.client.records",
    "FlowSummary": "kitaru.client.records",
    "RouteInfo": "kitaru.client.records",
    "Tag": "kitaru.client.records",
    "ScheduleInfo": "kitaru.client.schedules",
    "Schedules": "kitaru.client.schedules",
}

__all__ = [
    "DEFAULT_SERVICE_ACCOUNT",
    "AuthenticationError",
    "Conflict",
    "Connection",
    "DeploymentInfo",
    "Deployments",
    "ExecutionFailed",
    "ExecutionHandle",
    "ExecutionInfo",
    "ExecutionTimeout",
    "Executions",
    "FlowSummary",
    "InvalidArguments",
    "KitaruClient",
    "KitaruConnectionError",
    "KitaruError",
    "NotFound",
    "PromotionInfo",
    "Rejected",
    "ResolutionFailed",
    "RouteInfo",
    "ScheduleInfo",
    "Schedules",
    "Setting",
    "Tag",
    "resolve_connection",
]

__getattr__ = lazy_getattr(globals(), _LAZY)
