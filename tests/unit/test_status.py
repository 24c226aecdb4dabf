from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from kitaru.core.models import (
    ConditionStatus,
    FlowDeploymentSpec,
    FlowRouteSpec,
    RouteMode,
    TagRef,
)
from kitaru.core.routing import RouteView
from kitaru.core.status import (
    derive_deployment_status,
    derive_route_status,
    runner_image,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(seconds=30)


def deployment(version: int = 2, image: str | None = "img:1", runner: str | None = None):
    return FlowDeploymentSpec.model_validate(
        {
            "flow": "research_agent",
            "version": version,
            "snapshot": {"image": image, "entrypoint": "flows.research:research_agent"},
            "stack": {"runnerImage": runner},
        }
    )


def route(tag: str, *versions: int, exclusive: bool = True, flow: str = "research_agent"):
    return RouteView(flow, tag, exclusive, frozenset(versions))


ROUTES = [
    route("stable", 2),
    route("default", 1),
    route("benchmark", 1, 2, exclusive=False),
    route("canary", 2),
    route("default", 2, flow="other_flow"),
]


def test_deployment_status_tags_and_snapshot() -> None:
    status = derive_deployment_status(deployment(2), ROUTES, None, 1, T0)
    assert status.tags == [
        TagRef(tag="benchmark", exclusive=False),
        TagRef(tag="canary", exclusive=True),
        TagRef(tag="stable", exclusive=True),
    ]
    assert status.tag_summary == "benchmark,canary,stable"
    assert status.snapshot_name == "kitaru::research_agent::v2"
    assert status.observed_generation == 1
    (ready,) = status.conditions
    assert (ready.type, ready.status, ready.reason) == ("Ready", ConditionStatus.TRUE, "Runnable")


def test_deployment_default_first_and_other_flows_ignored() -> None:
    status = derive_deployment_status(deployment(1), ROUTES, None, 1, T0)
    assert status.tag_summary == "default,benchmark"


@pytest.mark.parametrize(
    ("image", "runner", "expected"),
    [
        ("img:1", None, "img:1"),
        (None, "runner:2", "runner:2"),
        ("img:1", "r", "img:1"),
        ("", "r", "r"),
    ],
)
def test_runner_image(image: str | None, runner: str | None, expected: str) -> None:
    assert runner_image(deployment(image=image, runner=runner)) == expected
    # The operator's default (chart `runner.image`) never wins over either.
    assert runner_image(deployment(image=image, runner=runner), "chart:0") == expected


def test_the_operators_default_runs_a_version_that_names_no_image() -> None:
    assert runner_image(deployment(image=None), "chart:0") == "chart:0"
    status = derive_deployment_status(deployment(image=None), [], None, 1, T0, "chart:0")
    (ready,) = status.conditions
    assert (ready.status, ready.reason) == (ConditionStatus.TRUE, "Runnable")
    assert ready.message.endswith("runs image chart:0")


def test_not_runnable_without_image() -> None:
    status = derive_deployment_status(deployment(image=None), [], None, 1, T0)
    (ready,) = status.conditions
    assert (ready.status, ready.reason) == (ConditionStatus.FALSE, "NotRunnable")
    assert "spec.snapshot.image" in ready.message
    assert "spec.stack.runnerImage" in ready.message
    assert status.tags == []
    assert status.tag_summary == ""


def test_deployment_status_is_stable_across_passes() -> None:
    first = derive_deployment_status(deployment(), ROUTES, None, 1, T0)
    again = derive_deployment_status(deployment(), ROUTES, first, 1, T1)
    assert again == first


def test_deployment_tag_move_keeps_transition_time() -> None:
    first = derive_deployment_status(deployment(), ROUTES, None, 1, T0)
    moved = derive_deployment_status(deployment(), [route("stable", 3)], first, 1, T1)
    assert moved.tags == []
    assert moved.conditions[0].last_transition_time == first.conditions[0].last_transition_time


def route_spec(tag: str, *versions: int, exclusive: bool = True) -> FlowRouteSpec:
    return FlowRouteSpec(flow="agent", tag=tag, exclusive=exclusive, versions=list(versions))


@pytest.mark.parametrize(
    ("spec", "existing", "ready", "reason", "resolved", "mode", "fragment"),
    [
        (route_spec("stable", 2), {1, 2}, "True", "Resolved", 2, RouteMode.EXCLUSIVE, "version 2"),
        (
            route_spec("bench", 1, 2, exclusive=False),
            {1, 2, 3},
            "True",
            "Shared",
            None,
            RouteMode.SHARED,
            "versions 1, 2",
        ),
        (
            route_spec("bench", 3, exclusive=False),
            {3},
            "True",
            "Resolved",
            3,
            RouteMode.SHARED,
            "version 3",
        ),
        (
            route_spec("stable", 4),
            {1, 2},
            "False",
            "VersionNotFound",
            None,
            RouteMode.EXCLUSIVE,
            "missing version(s) 4; move it with: "
            "kitaru flow tag agent stable --version N --exclusive",
        ),
        (
            route_spec("bench", 1, 5, 4, exclusive=False),
            {1},
            "False",
            "VersionNotFound",
            None,
            RouteMode.SHARED,
            "missing version(s) 4, 5",
        ),
    ],
)
def test_route_status(
    spec: FlowRouteSpec,
    existing: set[int],
    ready: str,
    reason: str,
    resolved: int | None,
    mode: RouteMode,
    fragment: str,
) -> None:
    status = derive_route_status(spec, existing, None, 3, T0)
    (condition,) = status.conditions
    assert (condition.status, condition.reason) == (ready, reason)
    assert fragment in condition.message
    assert status.resolved_version == resolved
    assert status.mode == mode
    assert status.observed_generation == 3


def test_route_recovers_and_records_transition() -> None:
    broken = derive_route_status(route_spec("stable", 2), set(), None, 1, T0)
    fixed = derive_route_status(route_spec("stable", 2), {2}, broken, 1, T1)
    assert fixed.conditions[0].status == ConditionStatus.TRUE
    assert fixed.conditions[0].last_transition_time == "2025-01-01T00:00:30Z"
    assert derive_route_status(route_spec("stable", 2), {2}, fixed, 1, T1) == fixed


def test_route_status_wire_shape() -> None:
    status = derive_route_status(route_spec("stable", 2), {2}, None, 1, T0)
    assert status.wire() == {
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Resolved",
                "message": "tag 'stable' of flow 'agent' routes to version 2",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
                "observedGeneration": 1,
            }
        ],
        "mode": "exclusive",
        "resolvedVersion": 2,
        "observedGeneration": 1,
    }
