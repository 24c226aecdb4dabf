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

INPUT_CHECKS = Counter(
    "kitaru_input_checks_total",
    "Checks of a run's inputs against its version's input schema, by outcome: valid, "
    "invalid, timeout (the checker process was killed), crashed.",
    ["outcome"],
)
RECONCILE_ERRORS = Counter(
    "kitaru_reconcile_errors_total",
    "Unexpected errors in one object's reconcile; the loop goes on with the next object.",
    ["kind"],
)


def serve(port: int) -> None:
    """Expose /metrics on `port` from a daemon thread."""
    start_http_server(port)
