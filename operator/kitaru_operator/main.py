"""`kitaru-operator` / `python -m kitaru_operator`: run the kopf operator with metrics."""

from __future__ import annotations

import argparse
import logging
import os

import kopf

from kitaru_operator import metrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kitaru-operator", description=__doc__)
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        help="namespace to watch (repeatable)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument(
        "--liveness",
        default=os.environ.get("KITARU_LIVENESS"),
        help="kopf liveness endpoint, e.g. http://0.0.0.0:8081/healthz",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("KITARU_METRICS_PORT", "8080")),
        help="port of the Prometheus /metrics endpoint; 0 disables it (default 8080)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kopf.configure(verbose=args.verbose)
    logging.getLogger("kitaru_operator").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if args.metrics_port:
        metrics.serve(args.metrics_port)
    import kitaru_operator.handlers  # noqa: F401  (registers the handlers)

    kopf.run(
        standalone=True,
        clusterwide=args.all_namespaces,
        namespaces=args.namespaces or [],
        liveness_endpoint=args.liveness,
    )
    return 0
