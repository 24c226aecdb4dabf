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


async def _guarded(function: Callable[..., None], *args: Any) -> None:
    try:
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


async def resync_forever(rt: Runtime) -> None:
    while True:
        await asyncio.sleep(INTERVAL)
        await resync_once(rt)
