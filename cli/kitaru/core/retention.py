"""How long finished runs are kept: a time to live and a per-flow history limit.

In the spirit of a Job's `ttlSecondsAfterFinished` and a CronJob's history limits: a
finished run is deleted `ttl_seconds` after it finished, or once `history_limit` newer
finished runs of the same flow exist, whichever comes first. Each knob is taken from
the invocation, else from the version it ran, else from the operator's defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# A week of runs, and the last thousand of each flow: enough to look back on a busy
# day, bounded so that the namespace (runs, their Jobs and pods) never grows forever.
DEFAULT_TTL_SECONDS = 7 * 24 * 3600
DEFAULT_HISTORY_LIMIT = 1000


@dataclass(frozen=True)
class Retention:
    """None means "no bound" for that knob."""

    ttl_seconds: int | None = None
    history_limit: int | None = None

    @property
    def keeps_forever(self) -> bool:
        return self.ttl_seconds is None and self.history_limit is None


def effective_retention(*layers: Retention) -> Retention:
    """Per knob, the first layer that sets it (invocation, version, operator)."""
    return Retention(
        ttl_seconds=next((r.ttl_seconds for r in layers if r.ttl_seconds is not None), None),
        history_limit=next((r.history_limit for r in layers if r.history_limit is not None), None),
    )


def over_history_limit(
    oldest_first: Sequence[tuple[float, str]], limits: Mapping[str, int | None], floor: int
) -> list[str]:
    """Runs of one flow with at least their own history limit of newer runs.

    `oldest_first` is the flow's finished runs as (finished_at, name); `limits` gives
    each run's limit; `floor` is the smallest of them, so the scan stops at the first run
    younger than every limit — a pass costs what is over the limit, not the history.
    """
    count = len(oldest_first)
    excess = []
    for position, (_, name) in enumerate(oldest_first):
        newer = count - 1 - position
        if newer < floor:
            break
        limit = limits.get(name)
        if limit is not None and newer >= limit:
            excess.append(name)
    return excess
