"""`kitaru-operator` / `python -m kitaru_operator`: run the operator.

Optionally waits for leadership first (`--leader-elect`, for more than one replica),
then runs kopf with the handlers of `kitaru_operator.handlers`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys

import kopf
from kitaru.core.history import DEFAULT_HISTORY_LIMIT as DEFAULT_ROUTE_HISTORY_LIMIT
from kitaru.core.payloads import DECODE_RECURSION_LIMIT
from kitaru.core.retention import DEFAULT_HISTORY_LIMIT, DEFAULT_TTL_SECONDS, Retention

from kitaru_operator import health, metrics
from kitaru_operator.input_checks import DEFAULT_TIMEOUT_SECONDS
from kitaru_operator.kube import AsyncKube
from kitaru_operator.leader import LeaderElector, LeaseSettings
from kitaru_operator.schedules import CLOCK_ENV, ScheduleClock
from kitaru_operator.settings import OperatorConfig


def _bound(value: str) -> int | None:
    """A retention knob: a non-negative integer, or `none` for no bound."""
    if value.lower() == "none":
        return None
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: use a number >= 0 or 'none'")
    return number


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
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
        default=env("KITARU_LIVENESS"),
        help="serve /healthz (at this URL's path) and /readyz, e.g. http://0.0.0.0:8081/healthz",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(env("KITARU_METRICS_PORT", "8080")),
        help="port of the Prometheus /metrics endpoint; 0 disables it (default 8080)",
    )
    parser.add_argument(
        "--ttl-seconds-after-finished",
        type=_bound,
        default=_bound(env("KITARU_TTL_SECONDS_AFTER_FINISHED", str(DEFAULT_TTL_SECONDS))),
        help="default time a finished run is kept, or 'none' "
        f"(default {DEFAULT_TTL_SECONDS}: a week)",
    )
    parser.add_argument(
        "--history-limit",
        type=_bound,
        default=_bound(env("KITARU_HISTORY_LIMIT", str(DEFAULT_HISTORY_LIMIT))),
        help="default number of finished runs kept per flow, or 'none' "
        f"(default {DEFAULT_HISTORY_LIMIT})",
    )
    parser.add_argument(
        "--route-history-limit",
        type=int,
        default=int(env("KITARU_ROUTE_HISTORY_LIMIT", str(DEFAULT_ROUTE_HISTORY_LIMIT))),
        help="route changes kept per flow in its FlowHistory "
        f"(default {DEFAULT_ROUTE_HISTORY_LIMIT})",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=float(env("KITARU_RESYNC_SECONDS", "30")),
        help="how often running invocations are reconciled again (default 30)",
    )
    parser.add_argument(
        "--resolve-deadline-seconds",
        type=float,
        default=float(env("KITARU_RESOLVE_DEADLINE_SECONDS", "60")),
        help="how long an invocation may wait for what it names to appear, e.g. a new "
        "flow's default route (default 60; the invocation's resolveDeadlineSeconds wins)",
    )
    parser.add_argument(
        "--input-check-timeout-seconds",
        type=float,
        default=float(env("KITARU_INPUT_CHECK_TIMEOUT_SECONDS", str(DEFAULT_TIMEOUT_SECONDS))),
        help="how long checking a run's inputs against its version's input schema may take "
        f"before the run fails (default {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    parser.add_argument(
        "--default-runner-image",
        default=env("KITARU_DEFAULT_RUNNER_IMAGE") or None,
        help="image of a version that names none and whose stack has no runner image "
        "(the chart's runner.image; default: none, such a version is not runnable)",
    )
    parser.add_argument(
        "--leader-elect",
        action="store_true",
        default=env("KITARU_LEADER_ELECT", "").lower() == "true",
        help="run only while holding the Lease (for more than one replica)",
    )
    parser.add_argument(
        "--leader-elect-namespace",
        default=env("POD_NAMESPACE", "default"),
        help="namespace of the Lease (default: $POD_NAMESPACE, else 'default')",
    )
    parser.add_argument(
        "--leader-elect-lease-seconds",
        type=float,
        default=float(env("KITARU_LEASE_SECONDS", "15")),
        help="how long a silent leader keeps the Lease (default 15)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def config_from(args: argparse.Namespace) -> OperatorConfig:
    return OperatorConfig(
        namespaces=tuple(args.namespaces or ()),
        retention=Retention(args.ttl_seconds_after_finished, args.history_limit),
        resync_seconds=args.resync_seconds,
        resolve_deadline_seconds=args.resolve_deadline_seconds,
        route_history_limit=max(args.route_history_limit, 1),
        input_check_timeout_seconds=args.input_check_timeout_seconds,
        schedule_clock=ScheduleClock.parse(os.environ.get(CLOCK_ENV, "")),
        default_runner_image=args.default_runner_image,
    )


def lease_settings(args: argparse.Namespace) -> LeaseSettings:
    # In a pod, HOSTNAME is the pod name: a restarted container takes its Lease back at once.
    identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    duration = args.leader_elect_lease_seconds
    return LeaseSettings(
        namespace=args.leader_elect_namespace,
        identity=identity,
        duration=duration,
        renew_deadline=duration * 2 / 3,
        retry_period=max(0.5, duration / 7.5),
    )


async def run(args: argparse.Namespace) -> int:
    import kitaru_operator.handlers  # noqa: F401  (registers the handlers)

    config = config_from(args)
    memo = kopf.Memo(config=config)
    if args.liveness:
        await health.serve(
            args.liveness, ready=lambda: "runtime" not in memo or memo.runtime.synced.is_set()
        )
    elector: LeaderElector | None = None
    if args.leader_elect:
        elector = LeaderElector(AsyncKube.from_environment(limit=4), lease_settings(args))
        await elector.acquire()
    operator = asyncio.create_task(
        kopf.operator(
            standalone=True,
            clusterwide=args.all_namespaces,
            namespaces=config.namespaces,
            memo=memo,
        )
    )
    if elector is None:
        await operator
        return 0
    keeper = asyncio.create_task(elector.keep())
    try:
        await asyncio.wait({operator, keeper}, return_when=asyncio.FIRST_COMPLETED)
        if keeper.done():  # leadership lost: stop at once, let the pod be restarted
            operator.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await operator
            return 1
        return 0
    finally:
        keeper.cancel()  # ended before the Lease is released and its client closed
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        with contextlib.suppress(Exception):
            await elector.release()
        await elector.api.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), DECODE_RECURSION_LIMIT))
    kopf.configure(verbose=args.verbose)
    logging.getLogger("kitaru_operator").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if args.metrics_port:
        metrics.serve(args.metrics_port)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
