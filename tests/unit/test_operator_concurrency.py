"""The operator's concurrency gate over its in-memory route model: admission, FIFO,
wake-ups and slots (no API server: the gate makes no calls)."""

from __future__ import annotations

from kitaru.core.routing import RouteView
from kitaru_operator.concurrency import ConcurrencyGate, queue_order, requested_tag
from kitaru_operator.flows import Flows, RouteRecord

NS, FLOW = "ns", "f"
T0 = "2026-01-01T00:00:00Z"


def _route(
    tag: str, max_concurrency: int | None = None, flow_max: int | None = None
) -> RouteRecord:
    return RouteRecord(
        name=f"f.{tag}",
        uid=tag,
        resource_version="1",
        generation=1,
        view=RouteView(flow=FLOW, tag=tag, exclusive=True, versions=frozenset({1})),
        high_water_mark=1,
        status_json=None,
        max_concurrency=max_concurrency,
        flow_max_concurrency=flow_max,
    )


def _gate(*routes: RouteRecord) -> tuple[ConcurrencyGate, list[str]]:
    flows = Flows()
    for record in routes:
        flows.put_route(NS, record)
    woken: list[str] = []
    return ConcurrencyGate(flows, lambda namespace, name: woken.append(name)), woken


def _admit(gate: ConcurrencyGate, name: str, revision: int, tag: str | None = "default") -> object:
    return gate.admit(NS, name, (T0, revision), FLOW, tag, None)


def test_without_limits_nothing_is_kept() -> None:
    gate, woken = _gate(_route("default"))
    assert all(_admit(gate, f"r{i}", i) is None for i in range(100))
    assert (gate.queues, gate.active.runs, woken) == ({}, {}, [])


def test_a_flow_limit_admits_in_order_and_frees_slots_to_the_head() -> None:
    gate, woken = _gate(_route("default", flow_max=2), _route("canary"))
    assert _admit(gate, "r0", 1) is None and _admit(gate, "r1", 2, "canary") is None
    assert _admit(gate, "r3", 4).position == 1  # type: ignore[union-attr]
    earlier = _admit(gate, "r2", 3, None)  # reconciled after r3, created before it
    later = _admit(gate, "r3", 4)
    assert (earlier.position, later.position) == (1, 2)  # type: ignore[union-attr]
    assert "the flow allows 2 active run(s)" in earlier.message  # type: ignore[union-attr]
    woken.clear()
    gate.forget((NS, "r0"))  # finished: its slot goes to the head of the line
    assert woken[0] == "r2"  # (and the head of r0's tag's line, which r2 is not in)
    assert _admit(gate, "r3", 4) is not None  # not its turn: r2 is first
    assert _admit(gate, "r2", 3, None) is None
    assert "r3" in woken  # moved up: its position is rewritten
    assert _admit(gate, "r3", 4).position == 1  # type: ignore[union-attr]


def test_a_cancelled_queued_run_leaves_the_line() -> None:
    gate, _ = _gate(_route("default", max_concurrency=1))
    _admit(gate, "r0", 1)
    _admit(gate, "r1", 2)
    _admit(gate, "r2", 3)
    gate.forget((NS, "r1"))  # cancelled while queued
    assert _admit(gate, "r2", 3).position == 1  # type: ignore[union-attr]
    assert gate.active.of_flow(NS, FLOW) == 1


def test_a_raised_limit_wakes_the_head() -> None:
    gate, woken = _gate(_route("default", max_concurrency=1))
    _admit(gate, "r0", 1)
    _admit(gate, "r1", 2)
    woken.clear()
    gate.flows.put_route(NS, _route("default", max_concurrency=2))
    gate.flow_changed(NS, FLOW)
    assert woken == ["r1"] and _admit(gate, "r1", 2) is None


def test_jobs_seen_after_a_restart_hold_their_slots() -> None:
    gate, _ = _gate(_route("default", flow_max=1))
    gate.job_running((NS, "old"), FLOW, "default")  # listed before any dispatch
    assert _admit(gate, "new", 5) is not None
    gate.release((NS, "old"))
    assert _admit(gate, "new", 5) is None


def test_a_run_is_counted_once_however_often_it_is_admitted_or_seen() -> None:
    gate, _ = _gate(_route("default", flow_max=3))
    assert _admit(gate, "r0", 1) is None
    assert _admit(gate, "r0", 1) is None  # a retried pass
    gate.job_running((NS, "r0"), FLOW, "default")  # its Job appears
    assert gate.active.of_flow(NS, FLOW) == 1


def test_the_queue_order_comes_from_the_creation_revision_then_the_status() -> None:
    fresh = {"metadata": {"creationTimestamp": T0, "resourceVersion": "42"}}
    assert queue_order(fresh) == (T0, 42)
    written = {
        "metadata": {"creationTimestamp": T0, "resourceVersion": "99"},
        "status": {"queueRevision": 42},
    }
    assert queue_order(written) == (T0, 42)


def test_the_requested_tag_is_what_resolution_calls_it() -> None:
    assert [requested_tag("stable", None), requested_tag(None, None), requested_tag(None, 2)] == [
        "stable",
        "default",
        None,
    ]
