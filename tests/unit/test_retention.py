"""Retention of finished runs: the rule (core) and the keeper's bookkeeping (no cluster)."""

from __future__ import annotations

from typing import Any

import pytest
from kitaru.core.retention import FlowHistory, Retention, effective_retention
from kitaru_operator.objects import FinishedInvocation
from kitaru_operator.retention import RetentionKeeper, finished_run


def test_each_knob_comes_from_the_first_layer_that_sets_it() -> None:
    invocation = Retention(ttl_seconds=60)
    version = Retention(ttl_seconds=3600, history_limit=5)
    operator = Retention(ttl_seconds=86400, history_limit=1000)
    assert effective_retention(invocation, version, operator) == Retention(60, 5)
    assert effective_retention(Retention(), Retention(), operator) == operator
    assert effective_retention(Retention(), Retention()).keeps_forever


def test_a_run_goes_once_its_limit_of_newer_runs_exists() -> None:
    history = FlowHistory()
    for t in (3, 0, 5, 1, 4, 2):  # r0 oldest ... r5 newest, arriving in any order
        history.add(f"r{t}", float(t), Retention(history_limit=3))
    assert not history.add("r4", 4.0, Retention(history_limit=3))  # kept already
    assert history.take_due(now=0) == ["r0", "r1", "r2"]
    assert history.take_due(now=0) == []
    assert sorted(history) == ["r3", "r4", "r5"]


def test_limits_count_newer_runs_of_every_policy() -> None:
    history = FlowHistory()
    history.add("long-kept", 0.0, Retention(history_limit=10))
    for t in (1, 2, 3):
        history.add(f"r{t}", float(t), Retention(history_limit=2))
    assert history.take_due(now=0) == ["r1"]  # two newer runs; long-kept has three, < 10
    history.remove("r3", 3.0)
    history.remove("r2")  # without its finish time: looked up by name
    assert list(history) == ["long-kept"]


def test_ttl_takes_the_expired_prefix_and_names_the_next_deadline() -> None:
    history = FlowHistory()
    for t in (10, 20, 30):
        history.add(f"r{t}", float(t), Retention(ttl_seconds=100))
    history.add("short", 25.0, Retention(ttl_seconds=5))
    assert history.next_deadline() == 30.0  # short: 25 + 5
    assert history.take_due(now=115) == ["r10", "short"]
    assert history.next_deadline() == 120.0


def run(flow: str, finished_at: float, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{flow}-{finished_at:g}", "namespace": "ns"},
        "spec": {"flow": flow, **spec},
        "status": {
            "phase": "Completed",
            "completionTime": f"2025-01-01T00:00:{int(finished_at):02d}Z",
            "resolved": {"version": 1},
        },
    }


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def keeper(defaults: Retention, version: Retention | None = None) -> tuple[RetentionKeeper, Clock]:
    """A keeper whose deleter is never started (no API), with a clock of our own."""
    clock = Clock()
    own = version or Retention()
    kept = RetentionKeeper(None, defaults, lambda ns, flow, v: own, clock=clock)  # type: ignore[arg-type]
    kept.listed.set()
    return kept, clock


def add(kept: RetentionKeeper, obj: dict[str, Any]) -> None:
    record = finished_run(FinishedInvocation.model_validate(obj))
    assert record is not None
    kept.upsert(("ns", obj["metadata"]["name"]), record)


def condemned(kept: RetentionKeeper) -> list[str]:
    names = []
    while not kept.condemned.empty():
        names.append(kept.condemned.get_nowait()[1])
    return names


EPOCH = 1735689600.0  # 2025-01-01T00:00:00Z


def test_history_limit_condemns_the_oldest_runs_of_that_flow_only() -> None:
    kept, clock = keeper(Retention(history_limit=2))
    clock.now = EPOCH
    for second in (3, 1, 2, 4):  # arrive out of order, as a list does
        add(kept, run("agent", second))
    add(kept, run("other", 1))
    kept.due()
    assert condemned(kept) == ["agent-1", "agent-2"]
    add(kept, run("agent", 5))
    kept.due()
    assert condemned(kept) == ["agent-3"]


def test_nothing_is_condemned_before_the_whole_list_is_in() -> None:
    kept, _ = keeper(Retention(history_limit=1))
    kept.listed.clear()
    add(kept, run("agent", 1))
    add(kept, run("agent", 2))
    kept.due()
    assert condemned(kept) == []
    kept.listed.set()
    kept.due()
    assert condemned(kept) == ["agent-1"]


def test_ttl_deadlines_come_from_the_run_else_the_version_else_the_operator() -> None:
    kept, clock = keeper(Retention(ttl_seconds=100), version=Retention(ttl_seconds=50))
    add(kept, run("agent", 0, ttlSecondsAfterFinished=10))
    add(kept, run("agent", 1))
    clock.now = EPOCH + 10.5
    assert kept.due() == pytest.approx(40.5)  # the next deadline: version's 50 s after 1 s
    assert condemned(kept) == ["agent-0"]
    clock.now = EPOCH + 51
    assert kept.due() is None
    assert condemned(kept) == ["agent-1"]


def test_runs_kept_forever_cost_nothing_and_deleted_runs_are_forgotten() -> None:
    kept, _ = keeper(Retention())
    add(kept, run("agent", 1))
    assert kept.histories == {}
    kept, _ = keeper(Retention(history_limit=5))
    add(kept, run("agent", 1))
    add(kept, run("agent", 2))
    kept.delete(
        ("ns", "agent-1"), finished_run(FinishedInvocation.model_validate(run("agent", 1)))
    )  # a DELETED event
    kept.delete(("ns", "agent-2"))  # gone while the watch was away: by name
    assert kept.histories == {}


def test_one_creators_flood_pushes_out_only_its_own_records() -> None:
    """Issue 23, item 7: the history limit was one budget per flow, so 1 000 instantly
    failing runs of one consumer deleted everyone else's records."""
    history = FlowHistory()
    limit = Retention(history_limit=3)
    for t in range(2):
        history.add(f"alice-{t}", float(t), limit, creator="alice")
    history.add("kubectl-0", 2.0, limit)  # no created-by: the unsigned runs' own budget
    for t in range(1000):
        history.add(f"mallory-{t}", 10.0 + t, limit, creator="mallory")
    due = history.take_due(now=0)
    assert len(due) == 997 and all(name.startswith("mallory-") for name in due)
    assert sorted(history) == [
        "alice-0", "alice-1", "kubectl-0", "mallory-997", "mallory-998", "mallory-999",
    ]  # fmt: skip
    history.add("alice-2", 2000.0, limit, creator="alice")
    history.add("alice-3", 2001.0, limit, creator="alice")
    assert history.take_due(now=0) == ["alice-0"]  # her own limit still holds
