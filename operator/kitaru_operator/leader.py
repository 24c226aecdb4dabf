"""Leader election on a coordination.k8s.io Lease, as client-go does it.

With `replicas: 2` exactly one operator is active: the one holding the Lease. The
others wait; a holder that stops renewing (killed, partitioned) loses it
`duration` seconds after its last renewal *as observed by the waiting replica* (its
own clock, so clock skew between nodes does not matter). A holder that cannot renew
within `renew_deadline` stops itself: two active replicas never overlap for longer than
the lease allows. A clean shutdown releases the Lease, so the standby takes over at
once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from kitaru_operator.kube import LEASE, ApiError, AsyncKube

logger = logging.getLogger("kitaru_operator")


@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    identity: str
    name: str = "kitaru-operator"
    duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


def _micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, api: AsyncKube, settings: LeaseSettings) -> None:
        self.api, self.settings = api, settings
        self.observed: tuple[Any, ...] | None = None  # (holder, renewTime) last seen
        self.observed_at = 0.0  # monotonic time it was first seen

    def _spec(self, previous: dict[str, Any]) -> dict[str, Any]:
        now = _micro_time()
        same_holder = previous.get("holderIdentity") == self.settings.identity
        return {
            "holderIdentity": self.settings.identity,
            "leaseDurationSeconds": int(self.settings.duration),
            "acquireTime": previous.get("acquireTime") if same_holder else now,
            "renewTime": now,
            "leaseTransitions": (previous.get("leaseTransitions") or 0) + (0 if same_holder else 1),
        }

    async def try_acquire_or_renew(self) -> bool:
        s = self.settings
        lease = await self.api.get(LEASE, s.namespace, s.name)
        if lease is None:
            body = {
                "apiVersion": LEASE.api_version,
                "kind": LEASE.kind,
                "metadata": {"name": s.name, "namespace": s.namespace},
                "spec": self._spec({}),
            }
            return await self.api.create(LEASE, s.namespace, body) is not None
        spec = lease.get("spec") or {}
        record = (spec.get("holderIdentity"), spec.get("renewTime"))
        if record != self.observed:
            self.observed, self.observed_at = record, time.monotonic()
        holder = spec.get("holderIdentity")
        held_by_other = bool(holder) and holder != s.identity
        if held_by_other and time.monotonic() < self.observed_at + s.duration:
            return False
        updated = {**lease, "spec": self._spec(spec)}
        return await self.api.replace(LEASE, updated) is not None

    async def acquire(self) -> None:
        """Wait until this process holds the Lease."""
        logger.info(
            "waiting for leadership (lease %s/%s)", self.settings.namespace, self.settings.name
        )
        while not await self._attempt():
            await asyncio.sleep(self.settings.retry_period)
        logger.info("became the leader as %s", self.settings.identity)

    async def keep(self) -> None:
        """Renew until a renewal deadline passes without success; then return."""
        renewed = time.monotonic()
        while time.monotonic() - renewed < self.settings.renew_deadline:
            await asyncio.sleep(self.settings.retry_period)
            if await self._attempt():
                renewed = time.monotonic()
        logger.error("lost leadership: no renewal for %gs", self.settings.renew_deadline)

    async def release(self) -> None:
        """Give the Lease up (holder cleared, so a standby takes it at once)."""
        s = self.settings
        lease = await self.api.get(LEASE, s.namespace, s.name)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != s.identity:
            return
        spec = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1}
        await self.api.replace(LEASE, {**lease, "spec": spec})

    async def _attempt(self) -> bool:
        try:
            return await self.try_acquire_or_renew()
        except (ApiError, aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("lease %s/%s: %s", self.settings.namespace, self.settings.name, exc)
            return False
