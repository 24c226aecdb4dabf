"""The operator's in-memory model: what each change marks dirty, when a stored status is
current, and resolution over the model (no cluster)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from kitaru.core.routing import AmbiguousTag, RouteView, resolve
from kitaru.core.status import derive_deployment_status
from kitaru_operator.flow_reconcile import status_is_current
from kitaru_operator.flows import (
    DeploymentRecord,
    FlowLookup,
    Flows,
    deployment_record,
    route_record,
    tag_changes,
)
from kitaru_operator.objects import Object, RouteObject

T0 = datetime(2025, 1, 1, tzinfo=UTC)
NS = "project"


def deployment(flow: str, version: int, status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {
            "name": f"{flow.replace('_', '-')}-v{version}",
            "uid": f"u{version}",
            "resourceVersion": "1",
            "generation": 1,
        },
        "spec": {
            "flow": flow,
            "version": version,
            "snapshot": {"image": "img:1", "entrypoint": "m:f"},
        },
    }
    if status is not None:
        obj["status"] = status
    return obj


def route(flow: str, tag: str, *versions: int, exclusive: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{flow.replace('_', '-')}.{tag}", "uid": tag, "resourceVersion": "1"},
        "spec": {"flow": flow, "tag": tag, "exclusive": exclusive, "versions": list(versions)},
    }


def put_deployment(flows: Flows, obj: dict[str, Any]) -> None:
    record = deployment_record(Object.model_validate(obj))
    assert record is not None
    flows.put_deployment(NS, record)


def put_route(flows: Flows, obj: dict[str, Any]) -> None:
    record = route_record(RouteObject.model_validate(obj))
    assert record is not None
    flows.put_route(NS, record)


def drain(flows: Flows) -> list[tuple[str, set[int], set[str]]]:
    """Every queued flow with what it has to do, as a worker would take them."""
    taken = []
    while not flows.queue.empty():
        key = flows.queue.get_nowait()
        dirty = flows.take(key)
        flows.done(key)
        taken.append((key[1], dirty.versions, dirty.routes))
    return taken


@pytest.fixture
def big_flow() -> Flows:
    """A flow with 1 000 versions, `default` on v1 and `stable` on v2, already handled."""
    flows = Flows()
    for version in range(1, 1001):
        put_deployment(flows, deployment("agent", version))
    put_route(flows, route("agent", "default", 1))
    put_route(flows, route("agent", "stable", 2))
    drain(flows)
    return flows


def test_a_new_version_marks_only_itself(big_flow: Flows) -> None:
    put_deployment(big_flow, deployment("agent", 1001))
    assert drain(big_flow) == [("agent", {1001}, set())]


def test_a_status_write_of_one_version_marks_only_that_version(big_flow: Flows) -> None:
    put_deployment(big_flow, deployment("agent", 500, status={"observedGeneration": 1}))
    assert drain(big_flow) == [("agent", {500}, set())]


def test_moving_a_tag_marks_the_two_versions_and_the_route(big_flow: Flows) -> None:
    put_route(big_flow, route("agent", "stable", 700))
    assert drain(big_flow) == [("agent", {2, 700}, {"stable"})]


def test_deleting_a_version_marks_the_routes_naming_it(big_flow: Flows) -> None:
    big_flow.drop_deployment(NS, "agent-v2")
    assert drain(big_flow) == [("agent", set(), {"stable"})]
    assert 2 not in big_flow.states[(NS, "agent")].deployments


def test_a_burst_coalesces_into_one_pass(big_flow: Flows) -> None:
    for version in (1001, 1002, 1003):
        put_deployment(big_flow, deployment("agent", version))
    put_route(big_flow, route("agent", "canary", 1003))
    assert drain(big_flow) == [("agent", {1001, 1002, 1003}, {"canary"})]


def test_marks_while_a_worker_has_the_flow_queue_it_again_afterwards(big_flow: Flows) -> None:
    put_deployment(big_flow, deployment("agent", 1001))
    key = big_flow.queue.get_nowait()
    big_flow.take(key)
    put_deployment(big_flow, deployment("agent", 1002))  # arrives during the pass
    assert big_flow.queue.empty()  # not handed to a second worker meanwhile
    big_flow.done(key)
    assert drain(big_flow) == [("agent", {1002}, set())]


@pytest.mark.parametrize(
    ("old", "new", "changed"),
    [
        (None, RouteView("f", "t", True, frozenset({1})), {1}),
        (
            RouteView("f", "t", True, frozenset({1})),
            RouteView("f", "t", True, frozenset({2})),
            {1, 2},
        ),
        (
            RouteView("f", "t", False, frozenset({1, 2})),
            RouteView("f", "t", False, frozenset({1, 2, 3})),
            {3},
        ),
        # The mode shows in every version's tag list, so a flip touches them all.
        (
            RouteView("f", "t", False, frozenset({1})),
            RouteView("f", "t", True, frozenset({1})),
            {1},
        ),
    ],
)
def test_tag_changes(old: RouteView | None, new: RouteView, changed: set[int]) -> None:
    assert tag_changes(old, new) == changed


def test_stored_status_is_current_exactly_when_a_rederive_would_change_nothing() -> None:
    flows = Flows()
    put_route(flows, route("agent", "default", 2))
    put_route(flows, route("agent", "stable", 2))
    state = flows.states[(NS, "agent")]
    tags = state.tags_of(2)
    spec = record_of(deployment("agent", 2)).spec()
    stored = derive_deployment_status(spec, [r.view for r in state.routes.values()], None, 1, T0)
    record = record_of(deployment("agent", 2, status=stored.wire()))
    assert status_is_current(record, tags)
    assert not status_is_current(record, state.tags_of(3))  # tags moved
    changed_since = deployment("agent", 2, status=stored.wire())
    changed_since["metadata"]["generation"] = 2
    assert not status_is_current(record_of(changed_since), tags)  # spec changed since
    assert not status_is_current(record_of(deployment("agent", 2)), tags)  # never derived


def record_of(obj: dict[str, Any]) -> DeploymentRecord:
    record = deployment_record(Object.model_validate(obj))
    assert record is not None
    return record


def test_resolution_reads_the_model() -> None:
    flows = Flows()
    for version in (1, 2, 3):
        put_deployment(flows, deployment("agent", version))
    put_route(flows, route("agent", "default", 1))
    put_route(flows, route("agent", "bench", 2, 3, exclusive=False))
    lookup = FlowLookup(flows, NS)
    assert resolve(lookup, "agent").version == 1
    assert resolve(lookup, "agent", version=3).version == 3
    with pytest.raises(AmbiguousTag):
        resolve(lookup, "agent", tag="bench")
    assert not FlowLookup(flows, "elsewhere").has_deployments("agent")


def test_a_route_whose_versions_are_applied_server_side_is_the_appliers() -> None:
    def managed(operation: str) -> RouteObject:
        obj = route("agent", "bench", 1, 2, exclusive=False)
        obj["metadata"]["managedFields"] = [
            {
                "manager": "kustomize-controller",
                "operation": operation,
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:versions": {"v:1": {}, "v:2": {}}}},
            }
        ]
        return RouteObject.model_validate(obj)

    applied, updated = route_record(managed("Apply")), route_record(managed("Update"))
    assert applied is not None and applied.versions_applied
    assert updated is not None and not updated.versions_applied
