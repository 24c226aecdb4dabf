"""Kubernetes Events on the operator's objects, posted in the background.

Our own recorder rather than kopf's: kopf's event queue exists only inside its
resource handlers, and most of our reconciles run from informers. Posting never
blocks a reconcile; when the API server is slow, the queue is bounded and the
oldest-first backlog is dropped with a log line rather than holding memory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp

from kitaru_operator.kube import EVENT, ApiError, AsyncKube

logger = logging.getLogger("kitaru_operator")
COMPONENT = "kitaru-operator"


@dataclass(frozen=True)
class ObjectRef:
    """What an Event is about."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_event(ref: ObjectRef, reason: str, message: str, warning: bool) -> dict:
    now = _timestamp()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{ref.name}.{uuid.uuid4().hex[:16]}", "namespace": ref.namespace},
        "involvedObject": {
            "apiVersion": ref.api_version,
            "kind": ref.kind,
            "namespace": ref.namespace,
            "name": ref.name,
            "uid": ref.uid,
        },
        "reason": reason,
        "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": os.environ.get("HOSTNAME", COMPONENT),
        "firstTimestamp": now,
        "lastTimestamp": now,
        "eventTime": None,
        "count": 1,
    }


class EventRecorder:
    def __init__(self, api: AsyncKube, capacity: int = 1000) -> None:
        self.api = api
        self.queue: asyncio.Queue[dict] = asyncio.Queue(maxsize=capacity)

    def post(self, ref: ObjectRef, reason: str, message: str, warning: bool = False) -> None:
        """Log the change and queue its Event (dropped, with a log line, when full)."""
        logger.log(logging.WARNING if warning else logging.INFO, "%s %s: %s", ref, reason, message)
        try:
            self.queue.put_nowait(build_event(ref, reason, message, warning))
        except asyncio.QueueFull:
            logger.warning("event queue full; dropped %s %s", ref, reason)

    async def run(self) -> None:
        while True:
            event = await self.queue.get()
            try:
                await self.api.create(EVENT, event["metadata"]["namespace"], event)
            except ApiError as exc:
                # 403/404: the namespace is being deleted; nobody will read the Event.
                level = logging.DEBUG if exc.status in (403, 404) else logging.WARNING
                logger.log(level, "posting event %s failed: %s", event["reason"], exc)
            except (aiohttp.ClientError, TimeoutError) as exc:
                logger.warning("posting event %s failed: %s", event["reason"], exc)
