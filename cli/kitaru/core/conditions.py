"""Kubernetes-style conditions, updated without losing their transition times."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from kitaru.core.models import Condition, ConditionStatus


def rfc3339(now: datetime) -> str:
    """Second-precision UTC timestamp, the format of metav1.Time."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Iterable[Condition],
    type: str,
    status: ConditionStatus | str | bool,
    reason: str,
    message: str,
    now: datetime | str,
    generation: int | None,
) -> list[Condition]:
    """A new condition list with `type` set; other conditions keep their order.

    lastTransitionTime changes only when the status does, so a status written
    again with the same verdict is byte-identical (no flapping, no spurious events).
    """
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    status = ConditionStatus(status)
    timestamp = now if isinstance(now, str) else rfc3339(now)

    def updated(previous: Condition | None) -> Condition:
        kept = (
            previous.last_transition_time
            if previous is not None and previous.status == status
            else None
        )
        return Condition(
            type=type,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=kept or timestamp,
            observed_generation=generation,
        )

    result = [updated(c) if c.type == type else c for c in conditions]
    if not any(c.type == type for c in result):
        result.append(updated(None))
    return result


def get_condition(conditions: Iterable[Condition], type: str) -> Condition | None:
    return next((c for c in conditions if c.type == type), None)


def is_true(conditions: Iterable[Condition], type: str) -> bool:
    condition = get_condition(conditions, type)
    return condition is not None and condition.status == ConditionStatus.TRUE
