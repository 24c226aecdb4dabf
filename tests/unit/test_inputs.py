from __future__ import annotations

import datetime
import enum
from collections.abc import Callable
from typing import Annotated, Any, Literal

import pytest
from kitaru.core import schema_bounds
from kitaru.core.inputs import (
    MAX_INPUTS_BYTES,
    MAX_SCHEMA_BYTES,
    InvalidInputs,
    check_inputs,
    inputs_hash,
    merge_inputs,
    schema_from_signature,
    validate_deploy_inputs,
    validate_inputs,
)
from kitaru.core.payloads import MAX_DEPTH, json_problem
from pydantic import BaseModel


@pytest.mark.parametrize(
    ("deploy", "invoke", "expected"),
    [
        ({}, {}, {}),
        ({"topic": "a"}, {}, {"topic": "a"}),
        ({}, {"topic": "b"}, {"topic": "b"}),
        ({"topic": "a", "n": 1}, {"topic": "b"}, {"topic": "b", "n": 1}),
        ({"cfg": {"x": 1, "y": 2}}, {"cfg": {"x": 3}}, {"cfg": {"x": 3}}),  # key by key, not deep
        ({"topic": "a"}, {"topic": None}, {"topic": None}),
    ],
)
def test_merge_inputs(deploy: dict, invoke: dict, expected: dict) -> None:
    assert merge_inputs(deploy, invoke) == expected


def test_merge_does_not_mutate() -> None:
    deploy = {"a": 1}
    merge_inputs(deploy, {"a": 2})
    assert deploy == {"a": 1}


def test_inputs_hash_is_canonical() -> None:
    assert inputs_hash({"a": 1, "b": [1, 2]}) == inputs_hash({"b": [1, 2], "a": 1})
    assert inputs_hash({"a": 1}) != inputs_hash({"a": "1"})
    assert len(inputs_hash({})) == 64
    assert inputs_hash({"t": "é"}) == inputs_hash({"t": "\u00e9"})


SCHEMA = {
    "type": "object",
    "properties": {
        "topic": {"type": "string"},
        "n": {"type": "integer", "minimum": 1},
        "mode": {"enum": ["fast", "slow"]},
        "cfg": {
            "type": "object",
            "properties": {"depth": {"type": "integer"}},
            "required": ["depth"],
            "additionalProperties": False,
        },
        "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
    },
    "required": ["topic"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    "value",
    [
        {"topic": "x"},
        {"topic": "x", "n": 3, "mode": "fast", "cfg": {"depth": 2}, "maybe": None},
        {"topic": "x", "maybe": 4},
    ],
)
def test_valid_inputs(value: dict) -> None:
    validate_inputs(value, SCHEMA)


@pytest.mark.parametrize(
    ("value", "fragments"),
    [
        ({}, ["missing required input 'topic'"]),
        ({"topic": 1}, ["input 'topic': 1 is not of type 'string'"]),
        ({"topic": "x", "n": 0}, ["input 'n': 0 is less than the minimum of 1"]),
        ({"topic": "x", "mode": "medium"}, ["input 'mode': 'medium' is not one of"]),
        (
            {"topic": "x", "extra": 1, "more": 2},
            ["unknown input 'extra', 'more' (expected: cfg, maybe, mode, n, topic)"],
        ),
        ({"topic": "x", "cfg": {}}, ["missing required input of input 'cfg' 'depth'"]),
        ({"topic": "x", "cfg": {"depth": 1, "z": 0}}, ["unknown input in input 'cfg' 'z'"]),
        ({"topic": "x", "cfg": {"depth": "deep"}}, ["input 'cfg.depth'"]),
        ({"topic": "x", "maybe": "s"}, ["input 'maybe': 's' is not of type"]),
        ({"n": "x"}, ["missing required input 'topic'", "input 'n': 'x' is not of type"]),
    ],
)
def test_invalid_inputs(value: dict, fragments: list[str]) -> None:
    with pytest.raises(InvalidInputs) as caught:
        validate_inputs(value, SCHEMA)
    for fragment in fragments:
        assert fragment in caught.value.message
    assert str(caught.value) == caught.value.message


def test_deploy_inputs_may_leave_required_inputs_to_the_invocations() -> None:
    validate_deploy_inputs({}, SCHEMA)
    validate_deploy_inputs({"n": 2}, SCHEMA)
    with pytest.raises(InvalidInputs, match="input 'n': 0 is less than the minimum of 1"):
        validate_deploy_inputs({"n": 0}, SCHEMA)
    with pytest.raises(InvalidInputs, match="unknown input 'extra'"):
        validate_deploy_inputs({"extra": 1}, SCHEMA)


def test_empty_schema_accepts_anything() -> None:
    validate_inputs({"anything": [1, {"x": None}]}, {})


def test_invalid_schema_is_reported() -> None:
    with pytest.raises(InvalidInputs, match="input schema is invalid"):
        validate_inputs({}, {"type": "nonsense"})


def test_validator_is_cached_per_schema() -> None:
    schema_bounds._verdict.cache_clear()
    for _ in range(50):
        validate_inputs({"topic": "x"}, dict(SCHEMA))
    info = schema_bounds._verdict.cache_info()
    assert info.misses == 1 and info.hits >= 49


def nested(depth: int) -> Any:
    """A value `depth` levels deep: [[...["x"]...]]."""
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


# Inputs the API server or a run could not carry, refused before anything is created:
# the operator, the client and the runner all call check_inputs (via validate_inputs).
@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        pytest.param([1, 2], "inputs must be a JSON object", id="list"),
        pytest.param("topic", "not str", id="string"),
        pytest.param(None, "not null", id="null"),
        pytest.param({"n": float("nan")}, "nan at 'n' is not a JSON number", id="nan"),
        pytest.param({"n": [float("-inf")]}, "-inf at 'n.0' is not a JSON number", id="infinity"),
        pytest.param(
            {"at": datetime.date(2025, 1, 1)}, "date at 'at' is not a JSON value", id="date"
        ),
        pytest.param({"s": {1, 2}}, "set at 's' is not a JSON value", id="set"),
        pytest.param({"b": b"x"}, "bytes at 'b'", id="bytes"),
        pytest.param({1: "x"}, "key 1 is not a string", id="int-key"),
        pytest.param({"c": {None: 1}}, "key None at 'c' is not a string", id="nested-key"),
        pytest.param(
            {"deep": nested(MAX_DEPTH)},
            f"nested more than {MAX_DEPTH} levels deep under 'deep'",
            id="too-deep",
        ),
        pytest.param(
            {"blob": "a" * MAX_INPUTS_BYTES},
            "inputs are 65,547 bytes as JSON; at most 65,536 (64 KiB): pass large data by",
            id="too-large",
        ),
        pytest.param(
            {"blob": "a" * (2 * 1024 * 1024)},
            "inputs are 2,097,163 bytes as JSON",
            id="over-etcd-limit",
        ),
    ],
)
def test_inputs_that_cannot_travel_are_refused(inputs: Any, fragment: str) -> None:
    with pytest.raises(InvalidInputs) as caught:
        check_inputs(inputs)
    assert fragment in caught.value.message
    with pytest.raises(InvalidInputs):
        validate_inputs(inputs, {})


@pytest.mark.parametrize(
    "inputs",
    [
        {"deep": nested(MAX_DEPTH - 2)},  # the object is level 1, the innermost list 63
        {"blob": "a" * (MAX_INPUTS_BYTES - 20)},
        {"s": "$(rm -rf /); `id` | cat > /etc/passwd", "u": "Grüße 👋 \u202e", "c": "\x00\x1b[2J"},
        {"html": "<script>alert(1)</script>", "json": '{"ok": false}', "n": -0.0, "big": 10**30},
    ],
    ids=["deepest", "largest", "shell-and-unicode", "html-and-json-looking"],
)
def test_plain_json_is_accepted_however_it_looks(inputs: dict[str, Any]) -> None:
    check_inputs(inputs)


def test_json_problem_walks_without_recursion() -> None:
    # 100 000 levels would overflow a recursive walk.
    assert json_problem(nested(100_000)) == f"nested more than {MAX_DEPTH} levels deep under '0'"


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        (
            {"default": "a" * MAX_SCHEMA_BYTES},
            r"input schema is 98,318 bytes as JSON; at most 98,304 \(96 KiB\)",
        ),
        ({"default": nested(MAX_DEPTH)}, "input schema is invalid: nested more than 64 levels"),
    ],
)
def test_a_schema_the_run_could_not_carry_is_refused(schema: dict, fragment: str) -> None:
    with pytest.raises(InvalidInputs, match=fragment):
        validate_inputs({}, schema)


# --- schema from signature ---------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Options(BaseModel):
    depth: int
    label: str = "x"


class Opaque:
    """A class pydantic has no schema for."""


def property_schema(schema: dict, name: str) -> dict:
    """One input's schema, with a `$ref` to `$defs` followed."""
    prop = schema["properties"][name]
    if "$ref" in prop:
        return schema["$defs"][prop["$ref"].removeprefix("#/$defs/")]
    return prop


def research_agent(topic: str, n: int = 3, ratio: float = 0.5, verbose: bool = False) -> str:
    return topic


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (str, {"type": "string"}),
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (bool, {"type": "boolean"}),
        (Any, {}),
        (list[str], {"type": "array", "items": {"type": "string"}}),
        (list, {"type": "array", "items": {}}),
        (set[int], {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}),
        (tuple[int, ...], {"type": "array", "items": {"type": "integer"}}),
        (
            tuple[int, str],
            {
                "type": "array",
                "prefixItems": [{"type": "integer"}, {"type": "string"}],
                "minItems": 2,
                "maxItems": 2,
            },
        ),
        (dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}),
        (dict, {"type": "object", "additionalProperties": True}),
        (str | None, {"anyOf": [{"type": "string"}, {"type": "null"}]}),
        (int | str, {"anyOf": [{"type": "integer"}, {"type": "string"}]}),
        (Literal["a", "b"], {"enum": ["a", "b"], "type": "string"}),
        (Color, {"enum": ["red", "blue"], "type": "string", "title": "Color"}),
        (Annotated[int, "meta"], {"type": "integer"}),
        (
            list[dict[str, float]],
            {
                "type": "array",
                "items": {"type": "object", "additionalProperties": {"type": "number"}},
            },
        ),
        (object, {}),
        (Callable[[int], int], {}),  # pydantic cannot describe it: any JSON value
        (Opaque, {}),
    ],
)
def test_type_schemas(annotation: Any, expected: dict) -> None:
    def flow(x):
        return None

    flow.__annotations__ = {"x": annotation}
    schema = schema_from_signature(flow, {})
    assert property_schema(schema, "x") == expected


@pytest.mark.parametrize(
    ("annotation", "accepted", "rejected"),
    [
        (list, [[], [1, "a", None]], [{}, "a"]),
        (dict, [{}, {"a": [1]}], [[], 1]),
        (Literal["a", "b"], ["a", "b"], ["c", 1]),
        (Color, ["red", "blue"], ["RED", 1]),
        (Options, [{"depth": 1}, {"depth": 1, "label": "y"}], [{}, {"depth": "deep"}]),
    ],
)
def test_type_schemas_validate_as_python_would(
    annotation: Any, accepted: list[Any], rejected: list[Any]
) -> None:
    def flow(x):
        return None

    flow.__annotations__ = {"x": annotation}
    schema = schema_from_signature(flow, {})
    for value in accepted:
        validate_inputs({"x": value}, schema)
    for value in rejected:
        with pytest.raises(InvalidInputs, match="input 'x"):
            validate_inputs({"x": value}, schema)


def test_schema_from_signature() -> None:
    schema = schema_from_signature(research_agent, {"topic": "durable agents"})
    assert schema == {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "topic": {"type": "string", "default": "durable agents"},
            "n": {"type": "integer", "default": 3},
            "ratio": {"type": "number", "default": 0.5},
            "verbose": {"type": "boolean", "default": False},
        },
        "additionalProperties": False,
    }


def test_parameters_without_default_or_deploy_value_are_required() -> None:
    schema = schema_from_signature(research_agent, {})
    assert schema["required"] == ["topic"]
    assert "default" not in schema["properties"]["topic"]


def test_deploy_value_overrides_python_default() -> None:
    schema = schema_from_signature(research_agent, {"n": 10})
    assert schema["properties"]["n"]["default"] == 10


def test_unknown_deploy_inputs_are_rejected() -> None:
    with pytest.raises(InvalidInputs, match=r"unknown input 'topik'.*expected: topic, n, ratio"):
        schema_from_signature(research_agent, {"topik": "x"})


def test_kwargs_flows_accept_extra_inputs() -> None:
    def flow(topic: str, **extra: Any) -> None:
        return None

    schema = schema_from_signature(flow, {"other": 1})
    assert schema["additionalProperties"] is True
    assert "extra" not in schema["properties"]
    validate_inputs({"topic": "x", "anything": 1}, schema)


def test_non_json_defaults_are_left_out() -> None:
    sentinel = object()

    def flow(x: Any = sentinel, y: list[int] | None = None) -> None:
        return None

    props = schema_from_signature(flow, {})["properties"]
    assert "default" not in props["x"]
    assert props["y"]["default"] is None


def test_python_defaults_are_written_as_json() -> None:
    def flow(color: Color = Color.BLUE, tags: frozenset[str] = frozenset({"a"})) -> None:
        return None

    props = schema_from_signature(flow, {})["properties"]
    assert props["color"]["default"] == "blue"
    assert props["tags"]["default"] == ["a"]


def test_any_parameter_name_is_an_input() -> None:
    def flow(json: str, model_config: int = 1, schema: bool = False) -> None:
        return None

    schema = schema_from_signature(flow, {"schema": True})
    assert schema["required"] == ["json"]
    assert schema["properties"] == {
        "json": {"type": "string"},
        "model_config": {"type": "integer", "default": 1},
        "schema": {"type": "boolean", "default": True},
    }


def test_positional_only_and_star_args_are_not_inputs() -> None:
    def flow(a: int, /, b: int, *rest: int, c: int = 0) -> None:
        return None

    schema = schema_from_signature(flow, {})
    assert list(schema["properties"]) == ["b", "c"]
    assert schema["required"] == ["b"]


def test_unresolvable_hints_accept_anything() -> None:
    def flow(x: Undefined, n: int = 1) -> None:  # type: ignore[name-defined]  # noqa: F821
        return None

    props = schema_from_signature(flow, {})["properties"]
    assert props["x"] == {}
    assert props["n"] == {"type": "integer", "default": 1}


def test_pydantic_models_become_object_schemas() -> None:
    def flow(opts: Options, more: list[Options] | None = None) -> None:
        return None

    schema = schema_from_signature(flow, {})
    assert property_schema(schema, "opts")["type"] == "object"
    assert property_schema(schema, "opts")["required"] == ["depth"]
    validate_inputs({"opts": {"depth": 1}, "more": [{"depth": 2}]}, schema)
    with pytest.raises(InvalidInputs, match="opts"):
        validate_inputs({"opts": {"depth": "deep"}}, schema)


class Outer(BaseModel):
    inner: Options


class NotFullyDefined(BaseModel):
    later: Undefined  # type: ignore[name-defined]  # noqa: F821


def test_types_pydantic_refuses_accept_anything() -> None:
    def flow(x: NotFullyDefined, n: int = 1) -> None:
        return None

    props = schema_from_signature(flow, {})["properties"]
    assert props["x"] == {}
    assert props["n"] == {"type": "integer", "default": 1}


def test_nested_pydantic_models_keep_their_refs() -> None:
    def flow(o: Outer) -> None:
        return None

    schema = schema_from_signature(flow, {})
    assert "Options" in schema["$defs"]
    validate_inputs({"o": {"inner": {"depth": 1}}}, schema)
    with pytest.raises(InvalidInputs, match=r"o\.inner"):
        validate_inputs({"o": {"inner": {}}}, schema)


def test_generated_schema_validates_merged_inputs() -> None:
    schema = schema_from_signature(research_agent, {"topic": "durable agents"})
    validate_inputs(merge_inputs({"topic": "durable agents"}, {"n": 5}), schema)
    with pytest.raises(InvalidInputs, match="input 'n'"):
        validate_inputs(merge_inputs({"topic": "a"}, {"n": "five"}), schema)
