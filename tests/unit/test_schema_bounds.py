"""Hostile input schemas cost bounded work everywhere they are evaluated (issue 23, item 1)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kitaru.core import schema_bounds
from kitaru.core.compat import schema_incompatibilities
from kitaru.core.inputs import InvalidInputs, check_input_schema, validate_inputs

REDOS = {"type": "object", "properties": {"x": {"type": "string", "pattern": "^(a|a)*$"}}}


def fan_out(levels: int, under: str | None = None, combinator: str = "anyOf") -> dict[str, Any]:
    """A small schema that applies 2**levels schemas to one value (no cycle): the root's,
    or input `under`'s."""
    defs: dict[str, Any] = {
        f"d{i}": {combinator: [{"$ref": f"#/$defs/d{i + 1}"}] * 2} for i in range(levels)
    }
    defs[f"d{levels}"] = {"type": "integer"}
    ref = {"$ref": "#/$defs/d0"}
    return {"properties": {under: ref}, "$defs": defs} if under else {**ref, "$defs": defs}


def test_a_backtracking_pattern_runs_in_linear_time() -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidInputs, match=r"input 'x': 'a+b' does not match"):
        validate_inputs({"x": "a" * 44 + "b"}, REDOS)
    validate_inputs({"x": "a" * 50_000}, REDOS)
    assert time.perf_counter() - started < 0.5  # Python's re: hours at 44 characters


def test_pattern_properties_and_additional_properties_use_the_same_engine() -> None:
    schema = {
        "type": "object",
        "patternProperties": {"^(a|a)*$": {}},
        "additionalProperties": False,
    }
    started = time.perf_counter()
    with pytest.raises(InvalidInputs, match=r"unknown input 'a+b'"):
        validate_inputs({"a" * 44 + "b": 1}, schema)
    validate_inputs({"a" * 44: 1}, schema)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        pytest.param({"$ref": "#"}, "# applies itself to the same value again", id="ref-root"),
        pytest.param(
            {"anyOf": [{"$ref": "#/$defs/a"}], "$defs": {"a": {"allOf": [{"$ref": "#"}]}}},
            "applies itself to the same value again",
            id="ref-cycle",
        ),
        pytest.param(
            {"$defs": {"a": {"not": {"$ref": "#/$defs/a"}}}, "$ref": "#/$defs/a"},
            "applies itself",
            id="not-cycle",
        ),
        pytest.param(
            {"$ref": "http://127.0.0.1:9/schema.json"}, "points outside the schema", id="remote"
        ),
        pytest.param({"$ref": "#/$defs/missing"}, "points at nothing", id="dangling"),
        pytest.param(
            {"properties": {"x": {"pattern": "(?=a)a"}}}, "cannot be matched in linear time",
            id="lookahead",
        ),
        pytest.param({"pattern": r"(a)\1"}, "without lookaround or backreferences", id="backref"),
        pytest.param({"$dynamicRef": "#meta"}, "$dynamicRef at # is not supported", id="dynamic"),
        pytest.param(
            {"properties": {"x": {"$id": "http://x/", "type": "string"}}},
            "an input schema is one document",
            id="nested-id",
        ),
        pytest.param(fan_out(40), "more than 32 schemas one inside another", id="long-chain"),
    ],
)  # fmt: skip
def test_a_schema_that_cannot_be_checked_with_bounded_work_is_refused(
    schema: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(InvalidInputs, match=f"input schema is invalid: .*{_escape(fragment)}"):
        check_input_schema(schema)
    with pytest.raises(InvalidInputs, match="input schema is invalid"):
        validate_inputs({}, schema)


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_recursion_that_descends_into_the_value_is_fine() -> None:
    tree = {"type": "object", "properties": {"child": {"$ref": "#"}}, "additionalProperties": False}
    value: dict[str, Any] = {}
    for _ in range(60):
        value = {"child": value}
    validate_inputs(value, tree)
    with pytest.raises(InvalidInputs, match="unknown input in input 'child"):
        validate_inputs({"child": {"child": {"other": 1}}}, tree)


def test_exponential_fan_out_stops_at_the_step_budget() -> None:
    started = time.perf_counter()
    with pytest.raises(
        InvalidInputs, match=r"cannot check these inputs: .* more than 100,000 steps"
    ):
        validate_inputs({"x": 1}, fan_out(15, under="x", combinator="allOf"))
    assert time.perf_counter() - started < 10


def test_unique_items_compares_json_values_in_n_log_n() -> None:
    schema = {"properties": {"x": {"type": "array", "uniqueItems": True}}}
    validate_inputs({"x": [[i] for i in range(3_000)]}, schema)
    with pytest.raises(InvalidInputs, match="non-unique"):
        validate_inputs({"x": [1, {"a": 1.0}, {"a": 1}]}, schema)
    validate_inputs({"x": [1, True, "1"]}, schema)  # true is not 1 in JSON Schema


def test_errors_are_few_and_short_whatever_the_schema() -> None:
    schema = {"allOf": [{"type": "string"}] * 200}
    with pytest.raises(InvalidInputs) as raised:
        validate_inputs({"k": "x" * 60_000}, schema)
    assert len(raised.value.message) < 20 * (schema_bounds.MAX_MESSAGE_CHARS + 10)
    assert raised.value.message.endswith("and maybe more")


@pytest.fixture()
def url_server() -> Iterator[tuple[str, list[str]]]:
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"type": "string"}')

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/schema.json", requests
    finally:
        server.shutdown()


def test_a_remote_reference_is_never_fetched(url_server: tuple[str, list[str]]) -> None:
    """jsonschema's default registry fetches a `$ref` URL with urllib (no timeout)."""
    url, requests = url_server
    for schema in ({"$ref": url}, {"properties": {"x": {"$ref": url}}}):
        with pytest.raises(InvalidInputs, match="points outside the schema"):
            validate_inputs({"x": "y"}, schema)
        assert schema_incompatibilities({"type": "object"}, schema)
    assert requests == []


@pytest.mark.parametrize(
    "new",
    [
        pytest.param({"$ref": "#"}, id="ref-root"),
        pytest.param({"anyOf": [{"$ref": "#"}]}, id="union-cycle"),
        pytest.param(fan_out(30, under="x"), id="fan-out"),
    ],
)
def test_the_compatibility_guard_is_bounded_and_errs_towards_incompatible(
    new: dict[str, Any],
) -> None:
    started = time.perf_counter()
    findings = schema_incompatibilities({"properties": {"x": {"type": "string"}}}, new)
    assert findings and time.perf_counter() - started < 2


def test_the_compatibility_guard_checks_enum_values_with_linear_patterns() -> None:
    old = {"type": "object", "properties": {"x": {"enum": ["a" * 44 + "b", "aa"]}}}
    new = REDOS
    started = time.perf_counter()
    assert schema_incompatibilities(old, new) == [
        "input 'x': no longer accepts '" + "a" * 44 + "b'"
    ]
    assert time.perf_counter() - started < 0.5
