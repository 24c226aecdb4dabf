import pytest
from kitaru.core.names import (
    SHOWN_MAX_LENGTH,
    InvalidName,
    InvalidVersion,
    deployment_name,
    flow_dns,
    flow_from_dns,
    parse_deployment_name,
    route_name,
    shown,
    snapshot_name,
    validate_execution_id,
    validate_flow,
    validate_tag,
    validate_version,
)


@pytest.mark.parametrize("flow", ["a", "research_agent", "x1", "a_b_c_9", "f" * 48])
def test_valid_flows(flow: str) -> None:
    assert validate_flow(flow) == flow
    assert flow_from_dns(flow_dns(flow)) == flow


@pytest.mark.parametrize(
    "flow",
    ["", "1a", "_a", "Research", "a-b", "a::b", "a b", "f" * 49, "é", "a\n", "a;rm", None, 5],
)
def test_invalid_flows(flow: str) -> None:
    with pytest.raises(InvalidName, match="lowercase Python identifier"):
        validate_flow(flow)


@pytest.mark.parametrize("tag", ["default", "stable", "team-a", "v2", "1", "a" * 63])
def test_valid_tags(tag: str) -> None:
    assert validate_tag(tag) == tag


@pytest.mark.parametrize(
    "tag",
    ["", "-a", "a-", "Stable", "a_b", "a.b", "a" * 64, "stable\n", "a\x1b[0m", "stäble", 7],
)
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


@pytest.mark.parametrize("version", [1, 2, 10**6])
def test_valid_versions(version: int) -> None:
    assert validate_version(version) == version


@pytest.mark.parametrize("version", [0, -1, True, 1.0, "1", None])
def test_invalid_versions(version: object) -> None:
    with pytest.raises(InvalidVersion, match="versions are whole numbers starting at 1"):
        validate_version(version)  # type: ignore[arg-type]


@pytest.mark.parametrize("exec_id", ["research-agent-x7k2p", "a", "run.1", "r" * 63])
def test_valid_execution_ids(exec_id: str) -> None:
    assert validate_execution_id(exec_id) == exec_id


@pytest.mark.parametrize("exec_id", ["", "../x", "A_B", "a/b", "r" * 64, "a\n", "-a", 3])
def test_invalid_execution_ids(exec_id: object) -> None:
    with pytest.raises(InvalidName, match="invalid execution id"):
        validate_execution_id(exec_id)  # type: ignore[arg-type]


def test_a_hostile_value_is_shown_escaped_and_cut() -> None:
    assert shown("a\x1b[2J\r") == "'a\\x1b[2J\\r'"
    long = "x" * 100_000
    text = shown(long)
    assert text.endswith("... (100000 characters)")
    assert len(text) < SHOWN_MAX_LENGTH + 30
    with pytest.raises(InvalidName) as caught:
        validate_tag(long)
    assert len(str(caught.value)) < 300
