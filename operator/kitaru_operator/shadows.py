"""How each route's shadow runs compare with their primaries (`kitaru.core.shadow`).

The finished-invocation informer feeds this tally (`kitaru_operator.finished`). Only
runs of a shadow pair are kept here, as an outcome and a result digest: the primary of a
pair names its shadow run in its frozen chain, the shadow names its
primary in `spec.shadowOf`. When the second of a pair finishes, its route is marked so
the flow's next pass writes the route's summary. Nothing is stored besides the
objects: after a restart the tally is the listed runs again, and runs that retention
deletes leave it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kitaru.core.models import ShadowSummary
from kitaru.core.shadow import RunOutcome, result_digest, summarize

from kitaru_operator.informer import Key
from kitaru_operator.objects import FinishedInvocation

RouteKey = tuple[str, str, str]  # (namespace, flow, tag)
PairFinished = Callable[[str, str, str], None]  # (namespace, flow, tag)


@dataclass(frozen=True, slots=True)
class PairSide:
    """A finished run of a shadow pair: which pair, and how it ended."""

    flow: str
    partner: str  # the shadow run of a primary, the primary of a shadow run
    is_shadow: bool
    tag: str | None  # the route a primary resolved through
    version: int | None
    outcome: RunOutcome


def pair_side(obj: FinishedInvocation) -> PairSide | None:
    """The side of a shadow pair a finished invocation is (None: it is not in a pair)."""
    spec, status = obj.spec, obj.status
    resolved = status.resolved
    shadow = resolved.shadow.name if resolved and resolved.shadow else None
    if not (spec.flow and status.phase and (spec.shadow_of or shadow)):
        return None
    return PairSide(
        flow=sys.intern(spec.flow),
        partner=spec.shadow_of or shadow or "",
        is_shadow=spec.shadow_of is not None,
        tag=resolved.tag if resolved else None,
        version=resolved.version if resolved else None,
        outcome=RunOutcome(status.phase, result_digest(status.result)),
    )


class ShadowTally:
    """The finished runs of shadow pairs, and each route's summary from them."""

    def __init__(self, pair_finished: PairFinished) -> None:
        self.sides: dict[Key, PairSide] = {}
        # The primaries of each route's pairs (finished ones: their shadows may not be).
        self.primaries: dict[RouteKey, set[str]] = {}
        self.pair_finished = pair_finished

    def upsert(self, key: Key, side: PairSide) -> None:
        namespace, name = key
        if self.sides.get(key) == side:
            return
        self.sides[key] = side
        primary = self.sides.get((namespace, side.partner)) if side.is_shadow else side
        if primary is None or primary.tag is None:
            return
        primary_name = side.partner if side.is_shadow else name
        self.primaries.setdefault((namespace, primary.flow, primary.tag), set()).add(primary_name)
        if (namespace, side.partner) in self.sides:  # the pair is complete now
            self.pair_finished(namespace, primary.flow, primary.tag)

    def delete(self, key: Key) -> None:
        side = self.sides.pop(key, None)
        if side is None or side.is_shadow or side.tag is None:
            return
        names = self.primaries.get((key[0], side.flow, side.tag))
        if names is not None:
            names.discard(key[1])

    def keys(self, namespace: str | None) -> Iterable[Key]:
        return [k for k in self.sides if namespace is None or k[0] == namespace]

    def summary(self, namespace: str, flow: str, tag: str, version: int) -> ShadowSummary:
        """How the finished pairs of `tag` with shadow `version` compare."""
        pairs = []
        for name in self.primaries.get((namespace, flow, tag), ()):
            primary = self.sides.get((namespace, name))
            shadow = self.sides.get((namespace, primary.partner)) if primary else None
            if (
                primary is not None
                and shadow is not None
                and shadow.is_shadow
                and shadow.partner == name  # the run named as its shadow says it is one
                and shadow.version == version
            ):
                pairs.append((primary.outcome, shadow.outcome))
        return summarize(version, pairs)
