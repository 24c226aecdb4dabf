"""Shadow runs: the pure rules and the operator's tally of finished pairs."""

from __future__ import annotations

from typing import Any

import pytest
from kitaru.core.models import FlowInvocationSpec
from kitaru.core.routing import RouteView, TagNotFound
from kitaru.core.shadow import (
    InvalidShadow,
    RunOutcome,
    agree,
    build_shadow_invocation,
    mirrors,
    result_diff,
    result_digest,
    shadow_name,
    shadow_spec,
    summarize,
)
from kitaru_operator.finished import finished_record
from kitaru_operator.objects import FinishedInvocation
from kitaru_operator.shadows import ShadowTally

STABLE = RouteView("agent", "stable", True, frozenset({2}))


def test_shadow_names_fit_an_invocation_name() -> None:
    assert shadow_name("agent-abcde") == "agent-abcde-shadow"
    long = "a" * 63
    assert len(shadow_name(long)) == 63 and shadow_name(long).endswith("-shadow")


def test_mirrors_about_the_fraction_and_always_the_same_names() -> None:
    names = [f"agent-{i:05x}" for i in range(2000)]
    chosen = [n for n in names if mirrors("agent", n, 0.2)]
    assert abs(len(chosen) - 400) <= 60
    assert chosen == [n for n in names if mirrors("agent", n, 0.2)]
    assert all(mirrors("agent", n, 1.0) for n in names[:50])


def test_shadow_spec_rules() -> None:
    spec = shadow_spec(STABLE, "agent", "stable", 3, 0.2)
    assert (spec.version, spec.fraction) == (3, 0.2)
    with pytest.raises(InvalidShadow, match="already routes to version 2"):
        shadow_spec(STABLE, "agent", "stable", 2, 0.2)
    for fraction in (0, 1.5, -0.1, True, "0.2"):
        with pytest.raises(InvalidShadow, match="--fraction is a number above 0 and at most 1"):
            shadow_spec(STABLE, "agent", "stable", 3, fraction)  # type: ignore[arg-type]
    with pytest.raises(TagNotFound):
        shadow_spec(None, "agent", "stable", 3, 0.2)


def test_the_shadow_invocation_mirrors_its_primary() -> None:
    primary = {"metadata": {"name": "agent-abcde", "uid": "u-1", "namespace": "ns"}}
    spec = FlowInvocationSpec(flow="agent", tag="stable", inputs={"topic": "x"}, history_limit=5)
    body = build_shadow_invocation(primary, spec, 3, {"topic": "x", "depth": 1})
    assert body["metadata"]["name"] == "agent-abcde-shadow"
    assert body["metadata"]["labels"] == {
        "kitaru.dev/flow": "agent",
        "kitaru.dev/shadow-of": "agent-abcde",
    }
    (owner,) = body["metadata"]["ownerReferences"]
    assert (owner["uid"], owner["controller"]) == ("u-1", False)
    assert body["spec"] == {
        "flow": "agent",
        "version": 3,
        "inputs": {"topic": "x", "depth": 1},
        "historyLimit": 5,
        "shadowOf": "agent-abcde",
    }


def test_agreement() -> None:
    done = RunOutcome("Completed", result_digest({"a": 1, "b": 2}))
    same = RunOutcome("Completed", result_digest({"b": 2, "a": 1}))
    other = RunOutcome("Completed", result_digest({"a": 1}))
    failed = RunOutcome("Failed", result_digest(None))
    assert agree(done, same) and not agree(done, other) and not agree(done, failed)
    assert agree(failed, RunOutcome("Failed", result_digest("whatever")))
    summary = summarize(3, [(done, same), (done, other), (failed, failed)])
    assert (summary.compared, summary.agreed, summary.agreement_rate) == (3, 2, 0.6667)
    assert summarize(3, []).agreement_rate is None


def test_result_diff() -> None:
    assert result_diff({"a": 1}, {"a": 1}) == []
    diff = result_diff({"a": 1, "b": "x"}, {"a": 1, "b": "y"})
    assert diff[:2] == ["--- primary", "+++ shadow"]
    assert '-  "b": "x"' in diff and '+  "b": "y"' in diff


def invocation(name: str, phase: str, result: Any, **spec: Any) -> FinishedInvocation:
    resolved: dict[str, Any] = {"version": spec.pop("version", 2), "tag": spec.pop("tag", None)}
    if "shadow" in spec:
        resolved["shadow"] = {"name": spec.pop("shadow"), "version": 3}
    return FinishedInvocation.model_validate(
        {
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"flow": "agent", **spec},
            "status": {
                "phase": phase,
                "result": result,
                "completionTime": "2026-01-01T00:00:00Z",
                "resolved": resolved,
            },
        }
    )


def test_the_tally_counts_each_pair_once_whichever_finishes_first() -> None:
    marked: list[tuple[str, str, str]] = []
    tally = ShadowTally(lambda *route: marked.append(route))

    def feed(obj: FinishedInvocation) -> None:
        record = finished_record(obj)
        assert record is not None and record.side is not None
        tally.upsert(("ns", obj.metadata.name), record.side)

    feed(invocation("p1", "Completed", "a", tag="stable", shadow="p1-shadow"))
    feed(invocation("p1-shadow", "Completed", "a", version=3, shadowOf="p1"))
    feed(invocation("p2-shadow", "Completed", "b", version=3, shadowOf="p2"))  # shadow first
    feed(invocation("p2", "Completed", "c", tag="stable", shadow="p2-shadow"))
    feed(invocation("p3", "Failed", None, tag="stable", shadow="p3-shadow"))  # still running
    assert marked == [("ns", "agent", "stable")] * 2
    summary = tally.summary("ns", "agent", "stable", 3)
    assert (summary.compared, summary.agreed) == (2, 1)
    feed(invocation("p1", "Completed", "a", tag="stable", shadow="p1-shadow"))  # re-listed
    assert len(marked) == 2
    tally.delete(("ns", "p1"))  # retention took it
    assert tally.summary("ns", "agent", "stable", 3).compared == 1
    assert tally.summary("ns", "agent", "other", 3).compared == 0


def test_runs_without_shadows_are_not_tallied() -> None:
    record = finished_record(invocation("plain", "Completed", "a", tag="stable"))
    assert record is not None and record.side is None and record.run is not None


def test_a_run_named_as_a_shadow_counts_only_if_it_is_that_ones_shadow() -> None:
    tally = ShadowTally(lambda *route: None)
    for obj in (
        invocation("p1", "Completed", "a", tag="stable", shadow="p1-shadow"),
        # A primary of its own (mirrored elsewhere) that took the shadow's name, and the
        # shadow of another run under it: neither is p1's shadow.
        invocation("p1-shadow", "Completed", "x", version=3, tag="stable", shadow="q"),
        invocation("p2", "Completed", "a", tag="stable", shadow="p2-shadow"),
        invocation("p2-shadow", "Completed", "x", version=3, shadowOf="p9"),
    ):
        record = finished_record(obj)
        assert record is not None and record.side is not None
        tally.upsert(("ns", obj.metadata.name), record.side)
    assert tally.summary("ns", "agent", "stable", 3).compared == 0
