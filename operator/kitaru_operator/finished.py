"""The finished-invocation informer's one sink: what retention, the shadow tally and
waiting promotions each keep of a finished run (one list and one watch for all three)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kitaru_operator.informer import Key
from kitaru_operator.objects import FinishedInvocation
from kitaru_operator.promotions import Promotions
from kitaru_operator.retention import FinishedRun, RetentionKeeper, finished_run
from kitaru_operator.shadows import PairSide, ShadowTally, pair_side


@dataclass(frozen=True, slots=True)
class Finished:
    run: FinishedRun | None
    side: PairSide | None


def finished_record(obj: FinishedInvocation) -> Finished | None:
    run, side = finished_run(obj), pair_side(obj)
    if run is None and side is None:
        return None
    return Finished(run, side)


class FinishedRuns:
    """Retention and promotions get every finished run, the tally those of a pair."""

    def __init__(
        self, retention: RetentionKeeper, shadows: ShadowTally, promotions: Promotions
    ) -> None:
        self.retention, self.shadows, self.promotions = retention, shadows, promotions

    def upsert(self, key: Key, record: Finished) -> None:
        if record.run is not None:
            self.retention.upsert(key, record.run)
            self.promotions.run_finished(key, record.run)
        if record.side is not None:
            self.shadows.upsert(key, record.side)

    def delete(self, key: Key, record: Finished | None = None) -> None:
        # A run a promotion counted keeps counting: promotions are not told.
        self.retention.delete(key, record.run if record is not None else None)
        self.shadows.delete(key)

    def keys(self, namespace: str | None) -> Iterable[Key]:
        return {*self.retention.keys(namespace), *self.shadows.keys(namespace)}
