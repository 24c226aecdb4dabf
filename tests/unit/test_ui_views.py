"""The dashboard's pure view helpers: the invoke form from a schema, snippets, charts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kitaru.client.connection import in_cluster_connection
from kitaru.client.errors import KitaruConnectionError
from kitaru.client.records import ExecutionInfo
from kitaru.core.inputs import InvalidInputs, schema_from_signature, validate_inputs
from kitaru.ui import views
from kitaru.ui.views import FormField, form_fields, inputs_from_form


def research(topic: str, depth: int = 1, ratio: float = 0.5, deep: bool = False) -> str:
    return topic


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "topic": {"type": "string", "minLength": 2, "description": "What to research"},
        "depth": {"type": "integer", "minimum": 1, "maximum": 5, "default": 1},
        "ratio": {"type": "number"},
        "deep": {"type": "boolean", "default": False},
        "mode": {"enum": ["fast", "slow"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
    },
    "required": ["topic"],
}


def by_name(fields: list[FormField]) -> dict[str, FormField]:
    return {f.name: f for f in fields}


def test_each_property_becomes_a_field_of_its_kind() -> None:
    fields = by_name(form_fields(SCHEMA, {}))
    assert {name: f.kind for name, f in fields.items()} == {
        "topic": "text",
        "depth": "integer",
        "ratio": "number",
        "deep": "boolean",
        "mode": "choice",
        "tags": "json",
        "note": "text",
    }
    assert fields["topic"].required and not fields["depth"].required
    assert fields["topic"].attrs == {"minlength": "2"}
    assert fields["depth"].attrs == {"min": "1", "max": "5"}
    assert fields["mode"].choices == ("fast", "slow")
    assert fields["topic"].description == "What to research"


def test_deploy_time_values_fill_the_form_before_schema_defaults() -> None:
    fields = by_name(form_fields(SCHEMA, {"topic": "durable agents", "tags": ["a"], "depth": 3}))
    assert fields["topic"].value == "durable agents"
    assert fields["depth"].value == "3"
    assert fields["deep"].value == "false"
    assert fields["tags"].value == '["a"]'
    assert fields["note"].value == ""


@pytest.mark.parametrize(
    ("form", "inputs"),
    [
        ({"topic": "x", "depth": "2"}, {"topic": "x", "depth": 2}),
        ({"topic": " spaced ", "ratio": "1.5"}, {"topic": " spaced ", "ratio": 1.5}),
        ({"ratio": "2", "deep": "true"}, {"ratio": 2, "deep": True}),
        ({"mode": "slow"}, {"mode": "slow"}),
        ({"tags": '["a", "b"]', "depth": ""}, {"tags": ["a", "b"]}),
        ({}, {}),
    ],
)
def test_filled_fields_become_inputs_and_empty_ones_are_left_out(
    form: dict[str, str], inputs: dict[str, Any]
) -> None:
    assert inputs_from_form(form_fields(SCHEMA, {}), form) == inputs


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"depth": "1.5"}, "input 'depth': '1.5' is not a whole number"),
        ({"depth": "true"}, "input 'depth': 'true' is not a whole number"),
        ({"ratio": "fast"}, "input 'ratio': 'fast' is not a number"),
        ({"deep": "yes"}, "input 'deep': choose true or false, not 'yes'"),
        ({"mode": "medium"}, "input 'mode': 'medium' is not one of ['fast', 'slow']"),
        ({"tags": "[a"}, "input 'tags': '[a' is not JSON"),
    ],
)
def test_unreadable_fields_are_refused_naming_the_input(form: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInputs, match=message.replace("[", r"\[").replace("]", r"\]")):
        inputs_from_form(form_fields(SCHEMA, {}), form)


def test_a_signature_schema_round_trips_through_the_form() -> None:
    """The schema `kitaru deploy` stores: its form's inputs pass the core validation."""
    schema = schema_from_signature(research, {"topic": "durable agents"})
    fields = form_fields(schema, {"topic": "durable agents"})
    form = {f.name: f.value for f in fields}
    inputs = inputs_from_form(fields, form)
    assert inputs == {"topic": "durable agents", "depth": 1, "ratio": 0.5, "deep": False}
    validate_inputs(inputs, schema)


def test_snippets_name_the_route() -> None:
    assert (
        views.cli_snippet("research_agent", "stable", {"topic": "it's"})
        == 'kitaru invoke research_agent --tag stable --input \'{"topic":"it\'"\'"\'s"}\''
    )
    python = views.python_snippet("research_agent", "stable", {"topic": "x"})
    assert "tag='stable'" in python and "inputs={'topic': 'x'}" in python
    compile(python, "snippet", "exec")


def run(status: str, version: int | None, seconds: float | None = None, tag: str = "") -> Any:
    finished = None if seconds is None else f"2026-01-01T00:00:{seconds:02.0f}Z"
    return ExecutionInfo(
        exec_id=f"r-{status}-{version}-{seconds}-{tag}",
        flow="f",
        status=status,
        resolved_version=version,
        resolved_tag=tag or None,
        started="2026-01-01T00:00:00Z",
        finished_at=finished,
    )


def test_version_stats_count_outcomes_and_completed_durations() -> None:
    runs = [
        run("completed", 2, 4),
        run("completed", 2, 10),
        run("failed", 2, 1),
        run("running", 2),
        run("completed", 1, 3),
        run("cancelled", 1, 2),
        run("pending", None),
    ]
    stats = views.version_stats(runs)
    assert [s.version for s in stats] == [2, 1]
    v2, v1 = stats
    assert (v2.completed, v2.failed, v2.active, v2.durations) == (2, 1, 1, (4.0, 10.0))
    assert v2.success_rate == pytest.approx(2 / 3)
    assert v2.median_seconds == 7.0
    assert (v1.completed, v1.cancelled, v1.success_rate) == (1, 1, 1.0)


def test_charts_are_svg_with_one_row_per_version() -> None:
    stats = views.version_stats([run("completed", 2, 4), run("failed", 1, 1)])
    success = views.success_chart(stats)
    assert success.startswith("<svg") and success.endswith("</svg>")
    assert "v2" in success and "100% of 1" in success and "0% of 1" in success
    durations = views.duration_chart(stats)
    assert "median 4.0s" in durations and "no completed runs" in durations


def test_last_run_per_tag_is_the_newest() -> None:
    newest_first = [run("running", 2, tag="stable"), run("completed", 2, 3, tag="stable")]
    newest_first.append(run("failed", 1, 1, tag="default"))
    latest = views.last_run_per_tag(newest_first)
    assert latest["stable"].status == "running" and latest["default"].status == "failed"


def test_in_cluster_connection_reads_the_pod_service_account(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("tok\n")
    (tmp_path / "namespace").write_text("team-a")
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    conn = in_cluster_connection(env, tmp_path)
    assert conn.server.value == "https://10.0.0.1:443"
    assert conn.token.value == "tok" and conn.project.value == "team-a"
    assert conn.ca_file.value == str(tmp_path / "ca.crt")
    assert in_cluster_connection({**env, "KITARU_PROJECT": "b"}, tmp_path).project.value == "b"
    with pytest.raises(KitaruConnectionError, match="not running in a pod"):
        in_cluster_connection({}, tmp_path)
