"""The drift timer: re-run every reconcile periodically from the indexes.

One loop for the whole operator instead of kopf timers, which would put a
finalizer on every object (an extra PATCH per invocation and objects that cannot
be deleted while the operator is down).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

from kitaru_operator.reconcile_flows import reconcile_flow
from kitaru_operator.reconcile_invocations import reconcile_invocation
from kitaru_operator.runtime import Runtime

logger = logging.getLogger("kitaru_operator")
INTERVAL = float(os.environ.get("KITARU_RESYNC_SECONDS", "5"))


async def _guarded(function: Callable[..., Any], *args: Any) -> None:
    """Run a sync reconcile in a thread, or await an async one."""
    try:
        if asyncio.iscoroutinefunction(function):
            await function(*args)
        else:
            await asyncio.to_thread(function, *args)
    except Exception:
        logger.exception("resync of %s failed; retrying in %.0fs", args[1:], INTERVAL)


async def resync_once(rt: Runtime) -> None:
    for namespace, flow in set(rt.indexes.flow_keys()):
        await _guarded(reconcile_flow, rt, namespace, flow)
    for namespace, name in rt.indexes.invocation_keys():
        body = rt.indexes.invocation(namespace, name)
        if body is not None:
            await _guarded(reconcile_invocation, rt, body)
        # Invocation reconciles run on the event loop and a pass over an unchanged
        # invocation never suspends: yield after each, so that a pass over thousands
        # of invocations does not stall the watch streams (the dispatch path).
        await asyncio.sleep(0)


async def resync_forever(rt: Runtime) -> None:
    while True:
        await asyncio.sleep(INTERVAL)
        await resync_once(rt)
