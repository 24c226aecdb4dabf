"""Concurrency limits: who may start now, who waits, and in which order (pure).

Two limits can apply to an invocation: its flow's (`flowMaxConcurrency` on the flow's
`default` route, counting every run of the flow) and its route's (`maxConcurrency` on
the tag it was invoked through, counting the runs invoked through that tag). A run is
*active* from the moment it is admitted until its Job finishes or goes.

Waiting runs queue per flow, first-in first-out by creation (`Entry`): a run
starts only when every limit it is under has a free slot and no run queued before it
competes for the same slots (under a flow limit: any earlier run of the flow; under a
route limit only: any earlier run of the same tag). Every operation here is O(log n)
(bisect on sorted lists) or O(1); nothing scans all runs.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from kitaru.core.names import DEFAULT_TAG, shown

Key = tuple[str, str]  # (namespace, invocation name)
FlowKey = tuple[str, str]  # (namespace, flow)
# (creationTimestamp, the revision it was created at, name): first-in first-out. The
# timestamp has whole seconds only; the revision orders runs created in the same second.
Order = tuple[str, int]
Entry = tuple[str, int, str]
K = TypeVar("K")
# Positions 1..HEAD are kept exact in the status; further back a position is rewritten
# only once it has halved, so a queue of n costs O(n log n) status writes, not O(n²).
HEAD = 10


MAX_LIMIT = 10_000


class InvalidLimit(ValueError):
    """A concurrency limit that is not a whole number from 1 to MAX_LIMIT."""


def validate_limit(limit: int) -> int:
    # bool is an int in Python; True is not a limit of 1.
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidLimit(
            f"invalid concurrency limit {shown(limit)}: use a whole number from 1 to "
            f"{MAX_LIMIT}, or clear the limit"
        )
    return limit


def limit_field(tag: str | None) -> tuple[str, str]:
    """(the route's tag, its spec field) a limit is written to: a tag's own limit, or,
    without a tag, the flow's — kept on its `default` route."""
    return (tag, "maxConcurrency") if tag is not None else (DEFAULT_TAG, "flowMaxConcurrency")


@dataclass(frozen=True)
class Limits:
    """The limits a run is under (None: no such limit)."""

    flow: int | None = None
    route: int | None = None

    @property
    def unlimited(self) -> bool:
        return self.flow is None and self.route is None


@dataclass
class _SortedEntries:
    entries: list[Entry] = field(default_factory=list)

    def add(self, entry: Entry) -> None:
        at = bisect.bisect_left(self.entries, entry)
        if at == len(self.entries) or self.entries[at] != entry:
            self.entries.insert(at, entry)

    def remove(self, entry: Entry) -> None:
        at = bisect.bisect_left(self.entries, entry)
        if at < len(self.entries) and self.entries[at] == entry:
            del self.entries[at]

    def position(self, entry: Entry) -> int:
        """1-based place of a present entry."""
        return bisect.bisect_left(self.entries, entry) + 1

    def head(self, count: int = 1) -> list[Entry]:
        return self.entries[:count]


@dataclass
class FlowQueue:
    """The queued runs of one flow, in one FIFO order and one per tag."""

    order: _SortedEntries = field(default_factory=_SortedEntries)
    by_tag: dict[str | None, _SortedEntries] = field(default_factory=dict)
    # name -> (its place in the order, its tag)
    entries: dict[str, tuple[Entry, str | None]] = field(default_factory=dict)

    def add(self, order: Order, name: str, tag: str | None) -> None:
        if name in self.entries:
            return
        entry = (*order, name)
        self.entries[name] = (entry, tag)
        self.order.add(entry)
        self.by_tag.setdefault(tag, _SortedEntries()).add(entry)

    def remove(self, name: str) -> str | None:
        """Drop a queued run; its tag."""
        entry, tag = self.entries.pop(name)
        self.order.remove(entry)
        same_tag = self.by_tag[tag]
        same_tag.remove(entry)
        if not same_tag.entries:
            del self.by_tag[tag]
        return tag

    def position(self, name: str, flow_limited: bool) -> int:
        """Place of a queued run among those it competes with (1: next)."""
        entry, tag = self.entries[name]
        return (self.order if flow_limited else self.by_tag[tag]).position(entry)

    def head(self, tag: str | None, flow_limited: bool, count: int = 1) -> list[str]:
        """The first `count` names in line for the slots a run of `tag` needs."""
        line = self.order if flow_limited else self.by_tag.get(tag)
        return [entry[-1] for entry in line.head(count)] if line else []

    def names(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


@dataclass
class ActiveRuns:
    """Admitted runs not yet finished: counted per flow and per (flow, tag)."""

    runs: dict[Key, tuple[str, str | None]] = field(default_factory=dict)
    per_flow: dict[FlowKey, int] = field(default_factory=dict)
    per_route: dict[tuple[str, str, str | None], int] = field(default_factory=dict)

    def add(self, key: Key, flow: str, tag: str | None) -> None:
        if key in self.runs:
            return
        self.runs[key] = (flow, tag)
        flow_key = (key[0], flow)
        self.per_flow[flow_key] = self.per_flow.get(flow_key, 0) + 1
        route_key = (key[0], flow, tag)
        self.per_route[route_key] = self.per_route.get(route_key, 0) + 1

    def remove(self, key: Key) -> tuple[str, str | None] | None:
        """Forget a run; its (flow, tag), or None if it was not active."""
        found = self.runs.pop(key, None)
        if found is None:
            return None
        flow, tag = found
        _decrement(self.per_flow, (key[0], flow))
        _decrement(self.per_route, (key[0], flow, tag))
        return found

    def of_flow(self, namespace: str, flow: str) -> int:
        return self.per_flow.get((namespace, flow), 0)

    def of_route(self, namespace: str, flow: str, tag: str | None) -> int:
        return self.per_route.get((namespace, flow, tag), 0)


def _decrement(counts: dict[K, int], key: K) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]


def has_slot(limits: Limits, active_in_flow: int, active_in_route: int) -> bool:
    """Whether every limit the run is under has a free slot."""
    if limits.flow is not None and active_in_flow >= limits.flow:
        return False
    return limits.route is None or active_in_route < limits.route


def reported_position(exact: int, previous: int | None) -> int:
    """The queue position to write: exact near the head or when it moved back; further
    back, the previous one until the run has come at least halfway closer."""
    if previous is None or exact <= HEAD or exact > previous or exact <= previous // 2:
        return exact
    return previous


def queued_message(limits: Limits, tag: str | None) -> str:
    """Why a run waits, in words that do not change while it waits (no write per tick)."""
    parts = []
    if limits.flow is not None:
        parts.append(f"the flow allows {limits.flow} active run(s)")
    if limits.route is not None:
        parts.append(f"tag '{tag}' allows {limits.route} active run(s)")
    return "waiting for a slot: " + " and ".join(parts) + "; starts first-in first-out"
