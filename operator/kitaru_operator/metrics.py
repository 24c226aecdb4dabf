"""Prometheus metrics of the operator, served by `kitaru-operator --metrics-port`."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

RECONCILE_SECONDS = Histogram(
    "kitaru_reconcile_duration_seconds",
    "Time spent in one reconcile pass.",
    ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
INVOCATIONS = Counter("kitaru_invocations_total", "Invocations that entered each phase.", ["phase"])
DISPATCH_SECONDS = Histogram(
    "kitaru_dispatch_latency_seconds",
    "From an invocation's creationTimestamp (1 s resolution) to its Job being created.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30),
)


def serve(port: int) -> None:
    """Expose /metrics on `port` from a daemon thread."""
    start_http_server(port)
