"""The operator's configuration (from `kitaru-operator`'s flags) and kopf's settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import kopf
from kitaru.core.history import DEFAULT_HISTORY_LIMIT as DEFAULT_ROUTE_HISTORY_LIMIT
from kitaru.core.names import GROUP, INVOCATIONS
from kitaru.core.retention import DEFAULT_HISTORY_LIMIT, DEFAULT_TTL_SECONDS, Retention

from kitaru_operator.input_checks import DEFAULT_TIMEOUT_SECONDS
from kitaru_operator.invocations import RUNNING_SELECTOR
from kitaru_operator.schedules import ScheduleClock

# Handlers that run for every event of every invocation: kopf's per-event
# "Handler '…' succeeded." INFO line is dropped (failures are still logged; a real Job
# create logs its own "created job" line).
HOT_HANDLERS = ("reconcile-invocation",)


@dataclass(frozen=True)
class OperatorConfig:
    """What one operator process watches and how it keeps finished runs."""

    namespaces: tuple[str, ...] = ()  # empty: every namespace
    retention: Retention = field(
        default_factory=lambda: Retention(DEFAULT_TTL_SECONDS, DEFAULT_HISTORY_LIMIT)
    )
    resync_seconds: float = 30.0  # drift correction of running invocations
    resolve_deadline_seconds: float = 60.0  # how long resolution may wait
    route_history_limit: int = DEFAULT_ROUTE_HISTORY_LIMIT  # changes kept per flow
    input_check_timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS  # then the run fails
    schedule_clock: ScheduleClock = field(default_factory=ScheduleClock)  # real time
    # The image of a version that names none and whose stack has no runner image.
    default_runner_image: str | None = None

    @property
    def scopes(self) -> tuple[str | None, ...]:
        """One watch per namespace, or one across all of them (None)."""
        return self.namespaces or (None,)


class QuietHotHandlers(logging.Filter):
    """Drops kopf's success line of the hot handlers before it is formatted or written."""

    SUCCEEDED = frozenset(f"Handler {handler!r} succeeded." for handler in HOT_HANDLERS)

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and record.msg in self.SUCCEEDED)


def configure_settings(settings: kopf.OperatorSettings) -> None:
    # kopf watches only invocations that have not finished: a namespace holding 100 000
    # finished runs costs its watch nothing (the API server filters on status.phase).
    settings.watching.field_selectors[GROUP, INVOCATIONS] = RUNNING_SELECTOR
    settings.watching.chunk_size = 500
    # Watches end server-side and client-side before a silent connection can hang.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    # The operator posts its own Events (`events`); kopf only reports handler failures.
    settings.posting.level = logging.WARNING
    settings.posting.loggers = False
    # The watched resources are known; no cluster-wide CRD scanning (least privilege).
    settings.scanning.disabled = True
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, QuietHotHandlers) for f in objects.filters):
        objects.addFilter(QuietHotHandlers())
