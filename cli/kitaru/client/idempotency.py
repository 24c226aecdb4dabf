"""Creating an invocation under an idempotency key (`kitaru.core.idempotency`).

The create is the check: its name comes from (flow, key), so of any number of
concurrent requests exactly one creates, and each other one reads what it created.
"""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from kitaru.client.errors import Conflict, NotFound
from kitaru.client.kube import AlreadyExists
from kitaru.client.rules import core_errors
from kitaru.core.idempotency import IDEMPOTENCY_WINDOW, Request, on_conflict
from kitaru.core.idempotency import Conflict as KeyConflict
from kitaru.core.names import INVOCATIONS, shown
from kitaru.core.phase import Phase

if TYPE_CHECKING:
    from kitaru.client.kube import Kube

ATTEMPTS = 5


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def create_once(
    kube: Kube, body: dict[str, Any], key: str, window: timedelta = IDEMPOTENCY_WINDOW
) -> tuple[dict[str, Any], bool]:
    """Create `body` (named after its key) or find the execution the key already started:
    (the invocation, whether it existed). A finished run older than the window is
    replaced: deleted with a uid precondition, so of two replacers only one deletes, and
    the create that follows is again decided by the API server."""
    requested = Request.of(body["spec"])
    name = body["metadata"]["name"]
    for _ in range(ATTEMPTS):
        try:
            return kube.create(INVOCATIONS, body), False
        except AlreadyExists:
            existing = kube.get(INVOCATIONS, name)
        if existing is None:
            continue  # deleted (replaced) meanwhile: create again
        phase = (existing.get("status") or {}).get("phase")
        with core_errors():
            decision = on_conflict(
                key,
                requested,
                existing["spec"],
                _parse_time(existing["metadata"]["creationTimestamp"]),
                phase is not None and Phase(phase).finished,
                datetime.now(UTC),
                window,
            )
        if decision is KeyConflict.SAME:
            return existing, True
        # NotFound/Conflict: another request replaced it first; its create decides.
        with suppress(NotFound, Conflict):
            kube.delete(INVOCATIONS, name, uid=existing["metadata"]["uid"])
    raise Conflict(
        f"invocation {name} of idempotency key {shown(key)} kept changing; try again",
        kind="IdempotencyConflict",
    )
