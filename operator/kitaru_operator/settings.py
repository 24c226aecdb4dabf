"""kopf settings and the operator runtime, set up once at startup."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import kopf

from kitaru_operator import indexes as ix
from kitaru_operator.indexes import Indexes
from kitaru_operator.kube import Kube
from kitaru_operator.runtime import Runtime

WORKERS = int(os.environ.get("KITARU_OPERATOR_WORKERS", "32"))
# Handlers that run for every event of every invocation, Job and pod: kopf's per-event
# "Handler '…' succeeded." INFO line is dropped for them (failures are still logged;
# a real Job create logs its own "created job" line). Flow/route handlers keep it.
HOT_HANDLERS = ("reconcile-invocation", "track-job", "track-pod")


class QuietHotHandlers(logging.Filter):
    """Drops kopf's success line of the hot handlers before it is formatted or written."""

    SUCCEEDED = frozenset(f"Handler {handler!r} succeeded." for handler in HOT_HANDLERS)

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and record.msg in self.SUCCEEDED)


def configure_settings(settings: kopf.OperatorSettings) -> None:
    # Sync handlers run in this pool; it bounds concurrent API calls too.
    settings.execution.max_workers = WORKERS
    # Watches end server-side and client-side before a silent connection can hang.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    # Only explicit kopf.info/warn become Events, not every log line.
    settings.posting.level = logging.INFO
    settings.posting.loggers = False
    # The watched resources are known; no cluster-wide CRD scanning (least privilege).
    settings.scanning.disabled = True
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, QuietHotHandlers) for f in objects.filters):
        objects.addFilter(QuietHotHandlers())


def runtime_from(kwargs: Mapping[str, Any]) -> Runtime:
    """The runtime, with the indexes kopf passes to handlers by their ids."""
    indexes = Indexes({name: kwargs[name] for name in ix.ALL})
    return Runtime(kube=Kube(pool_size=WORKERS + 4), indexes=indexes)
