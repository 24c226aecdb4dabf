"""How long finished runs are kept: a time to live and a history limit per flow and creator.

In the spirit of a Job's `ttlSecondsAfterFinished` and a CronJob's history limits: a
finished run is deleted `ttl_seconds` after it finished, or once `history_limit` newer
finished runs of the same flow *by the same creator* exist, whichever comes first. Each
knob is taken from the invocation, else from the version it ran, else from the
operator's defaults.

Per creator, because the limit is a shared budget otherwise: one consumer's 1 000
instantly failing runs would push everyone else's records out (issue 23). The creator
is the run's `kitaru.dev/created-by` annotation, which the clients set and admission
checks against the requesting user; runs without one (kubectl, curl) share one
creator, "" — a flood of those pushes out only their own kind. A namespace then keeps
at most the limit per flow per user who ran it, not per flow.

`FlowHistory` keeps one flow's finished runs compactly enough for 100 000 of them
(a float and a name each, in arrays ordered by finish time, one pair of arrays per
retention policy and creator in use) and answers "which are due" at the cost of what is due.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field

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


@dataclass
class _Runs:
    """Runs sharing one retention policy, oldest first: parallel finish times and names."""

    finished: array[float] = field(default_factory=lambda: array("d"))
    names: list[str] = field(default_factory=list)

    def find(self, name: str, finished_at: float) -> int | None:
        index = bisect.bisect_left(self.finished, finished_at)
        while index < len(self.finished) and self.finished[index] == finished_at:
            if self.names[index] == name:
                return index
            index += 1
        return None

    def newer_than(self, finished_at: float) -> int:
        return len(self.finished) - bisect.bisect_right(self.finished, finished_at)

    def take_oldest(self, count: int) -> list[str]:
        taken = self.names[:count]
        del self.names[:count], self.finished[:count]
        return taken


# Runs are kept in groups sharing a retention policy and a creator.
_Group = tuple[Retention, str]


class FlowHistory:
    """One flow's finished runs that retention may delete."""

    def __init__(self) -> None:
        self.by_policy: dict[_Group, _Runs] = {}

    def __len__(self) -> int:
        return sum(len(runs.names) for runs in self.by_policy.values())

    def __iter__(self) -> Iterator[str]:
        for runs in self.by_policy.values():
            yield from runs.names

    def add(self, name: str, finished_at: float, policy: Retention, creator: str = "") -> bool:
        """Keep a run of `creator` (False if it is kept already)."""
        runs = self.by_policy.setdefault((policy, creator), _Runs())
        if runs.find(name, finished_at) is not None:
            return False
        index = bisect.bisect_right(runs.finished, finished_at)
        runs.finished.insert(index, finished_at)
        runs.names.insert(index, name)
        return True

    def remove(self, name: str, finished_at: float | None = None) -> bool:
        """Forget a run; without its finish time, by looking through every run."""
        for group, runs in self.by_policy.items():
            if finished_at is None:
                index = runs.names.index(name) if name in runs.names else None
            else:
                index = runs.find(name, finished_at)
            if index is not None:
                del runs.names[index], runs.finished[index]
                if not runs.names:
                    del self.by_policy[group]
                return True
        return False

    def _newer(self, finished_at: float, creator: str) -> int:
        """Runs of `creator` (any policy) that finished after `finished_at`."""
        return sum(
            runs.newer_than(finished_at)
            for (_, by), runs in self.by_policy.items()
            if by == creator
        )

    def take_due(self, now: float) -> list[str]:
        """Forget and return every run past its TTL or with its history limit of newer
        runs by its creator. Both conditions hold for a prefix of each group's runs, so
        the scan stops at the first run that is kept."""
        due: list[str] = []
        for group, runs in list(self.by_policy.items()):
            policy, creator = group
            count = 0
            for finished_at in runs.finished:
                expired = policy.ttl_seconds is not None and finished_at + policy.ttl_seconds <= now
                over = (
                    policy.history_limit is not None
                    and self._newer(finished_at, creator) >= policy.history_limit
                )
                if not (expired or over):
                    break
                count += 1
            due += runs.take_oldest(count)
            if not runs.names:
                del self.by_policy[group]
        return due

    def next_deadline(self) -> float | None:
        """When the oldest run of some policy reaches its TTL (None: no TTL applies)."""
        deadlines = [
            runs.finished[0] + policy.ttl_seconds
            for (policy, _), runs in self.by_policy.items()
            if policy.ttl_seconds is not None and runs.names
        ]
        return min(deadlines, default=None)
