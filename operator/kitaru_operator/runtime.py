"""What every reconcile needs: the API, the indexes, per-key locks, event posting."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from kitaru_operator.indexes import Indexes
from kitaru_operator.kube import AsyncKube, Kube

logger = logging.getLogger("kitaru_operator")


def _stripe(key: Hashable, stripes: int) -> int:
    """Which of `stripes` locks serialises `key` (a hash of its repr)."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % stripes


class StripedLocks:
    """A fixed set of locks picked by key hash: bounded memory, no cleanup.

    Serialises reconciles of the same object (or flow) triggered from different
    watch streams (e.g. an invocation and its Job) without a lock per object.
    """

    def __init__(self, stripes: int = 256) -> None:
        self._locks = [threading.Lock() for _ in range(stripes)]

    def __call__(self, key: Hashable) -> threading.Lock:
        return self._locks[_stripe(key, len(self._locks))]


class AsyncStripedLocks:
    """`StripedLocks` for coroutines on one event loop (the invocation reconciles)."""

    def __init__(self, stripes: int = 256) -> None:
        self._locks = [asyncio.Lock() for _ in range(stripes)]

    def __call__(self, key: Hashable) -> asyncio.Lock:
        return self._locks[_stripe(key, len(self._locks))]


@dataclass
class Runtime:
    kube: Kube
    indexes: Indexes
    # The invocation hot path: async API calls and locks, on kopf's event loop.
    akube: AsyncKube | None = None
    locks: StripedLocks = field(default_factory=StripedLocks)
    alocks: AsyncStripedLocks = field(default_factory=AsyncStripedLocks)
    # Jobs this process created that the Job index has not delivered yet.
    recent_jobs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # Invocations whose status this process wrote, until the index delivers the write:
    # key -> (resourceVersion the write was based on, the object as written).
    written: dict[tuple[str, str], tuple[str, dict[str, Any]]] = field(default_factory=dict)


def post_event(body: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
    """A Kubernetes Event on the object (posted asynchronously by kopf) and a log line."""
    name = f"{body['kind']}/{body['metadata']['namespace']}/{body['metadata']['name']}"
    logger.info("%s %s: %s", name, reason, message)
    with contextlib.suppress(LookupError):  # no kopf event queue here (e.g. unit tests)
        (kopf.warn if warning else kopf.info)(cast(kopf.Body, body), reason=reason, message=message)
