import pytest
from kitaru.core.names import (
    InvalidName,
    deployment_name,
    flow_dns,
    flow_from_dns,
    parse_deployment_name,
    route_name,
    snapshot_name,
    validate_flow,
    validate_tag,
)


@pytest.mark.parametrize("flow", ["a", "research_agent", "x1", "a_b_c_9", "f" * 48])
def test_valid_flows(flow: str) -> None:
    assert validate_flow(flow) == flow
    assert flow_from_dns(flow_dns(flow)) == flow


@pytest.mark.parametrize("flow", ["", "1a", "_a", "Research", "a-b", "a::b", "a b", "f" * 49, "é"])
def test_invalid_flows(flow: str) -> None:
    with pytest.raises(InvalidName, match="lowercase Python identifier"):
        validate_flow(flow)


@pytest.mark.parametrize("tag", ["default", "stable", "team-a", "v2", "1", "a" * 63])
def test_valid_tags(tag: str) -> None:
    assert validate_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", "-a", "a-", "Stable", "a_b", "a.b", "a" * 64])
def test_invalid_tags(tag: str) -> None:
    with pytest.raises(InvalidName, match="invalid tag"):
        validate_tag(tag)


def test_object_names() -> None:
    assert deployment_name("research_agent", 3) == "research-agent-v3"
    assert route_name("research_agent", "stable") == "research-agent.stable"
    assert snapshot_name("research_agent", 3) == "kitaru::research_agent::v3"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("research-agent-v3", ("research_agent", 3)),
        ("a-v1-v12", ("a_v1", 12)),
        ("a-v0", None),
        ("a-v01", None),
        ("a-3", None),
        ("research-agent.stable", None),
    ],
)
def test_parse_deployment_name(name: str, expected: tuple[str, int] | None) -> None:
    assert parse_deployment_name(name) == expected
