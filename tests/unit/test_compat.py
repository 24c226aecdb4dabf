"""The schema-compatibility rule: what a new input schema rejects of what the old accepts."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from kitaru.core.compat import (
    SchemaCheck,
    check_route_schema,
    format_accepted,
    incompatibility_message,
    parse_accepted,
    route_incompatibilities,
    schema_incompatibilities,
)
from kitaru.core.inputs import schema_from_signature
from kitaru.core.models import FlowRouteSpec
from kitaru.core.status import derive_route_status
from pydantic import BaseModel


class Config(BaseModel):
    depth: int
    style: str = "short"


class ConfigRetyped(BaseModel):
    depth: str
    style: str = "short"


def base(topic: str, depth: int = 1, notes: str = "") -> None: ...
def topic_int(topic: int, depth: int = 1, notes: str = "") -> None: ...
def notes_removed(topic: str, depth: int = 1) -> None: ...
def depth_required(topic: str, depth: int, notes: str = "") -> None: ...
def widened(topic: str | None, depth: float = 1, notes: str = "", extra: int = 0) -> None: ...
def open_ended(topic: str, depth: int = 1, notes: str = "", **kwargs: Any) -> None: ...
def literal_topic(topic: Literal["a", "b"], depth: int = 1, notes: str = "") -> None: ...
def literal_wider(topic: Literal["a", "b", "c"], depth: int = 1, notes: str = "") -> None: ...
def nested(cfg: Config, tags: list[str] | None = None) -> None: ...
def nested_retyped(cfg: ConfigRetyped, tags: list[int] | None = None) -> None: ...
def untyped(topic, depth=1, notes=""): ...
def mapping(weights: dict[str, float]) -> None: ...
def mapping_int(weights: dict[str, int]) -> None: ...
def pair(point: tuple[int, int]) -> None: ...
def pair_str(point: tuple[int, str]) -> None: ...


def schema(func: Any) -> dict[str, Any]:
    return schema_from_signature(func, {})


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (base, base, []),
        (base, topic_int, ["input 'topic': type string → integer"]),
        (base, notes_removed, ["input 'notes' was removed"]),
        (base, depth_required, ["input 'depth' is newly required without a default"]),
        (base, widened, []),
        (widened, base, ["input 'topic': type string | null → string",
                         "input 'depth': type number → integer",
                         "input 'extra' was removed"]),
        (base, open_ended, []),
        (open_ended, base, ["no longer accepts extra inputs"]),
        (open_ended, widened, ["input 'extra': type any value → integer",
                               "no longer accepts extra inputs"]),
        (base, literal_topic, ["input 'topic': type string → one of 'a', 'b'"]),
        (literal_topic, base, []),
        (literal_topic, literal_wider, []),
        (literal_wider, literal_topic, ["input 'topic': no longer accepts 'c'"]),
        (nested, nested, []),
        (nested, nested_retyped, ["input 'cfg.depth': type integer → string",
                                  "input 'tags[]': type string → integer"]),
        (untyped, base, ["input 'topic': type any value → string",
                         "input 'depth': type any value → integer",
                         "input 'notes': type any value → string"]),
        (base, untyped, []),
        (mapping, mapping_int, ["input 'weights.*': type number → integer"]),
        (mapping_int, mapping, []),
        (pair, pair_str, ["input 'point[1]': type integer → string"]),
    ],
)  # fmt: skip
def test_generated_schemas(old: Any, new: Any, expected: list[str]) -> None:
    assert schema_incompatibilities(schema(old), schema(new)) == expected


OBJ = {"type": "object", "additionalProperties": False}


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # Bounds: widening is fine, narrowing is named with both values.
        ({"type": "string", "maxLength": 5}, {"type": "string", "maxLength": 9}, []),
        ({"type": "string", "maxLength": 9}, {"type": "string", "maxLength": 5},
         ["input 'x': maxLength 9 → 5"]),
        ({"type": "integer"}, {"type": "integer", "minimum": 0}, ["input 'x': minimum none → 0"]),
        ({"type": "integer", "minimum": 1}, {"type": "integer", "minimum": 0}, []),
        ({"type": "string"}, {"type": "string", "pattern": "^a"},
         ["input 'x': pattern none → '^a'"]),
        # Combinators the rule does not reason about are reported, never let through.
        ({"type": "string"}, {"allOf": [{"type": "string"}]},
         ["input 'x': its schema changed in a way that is not checked"]),
        ({"type": "string"}, False, ["input 'x': no longer accepts any value"]),
        ({"type": "string"}, {"description": "anything"}, []),
    ],
)  # fmt: skip
def test_constraints(old: Any, new: Any, expected: list[str]) -> None:
    wrap = lambda s: {**OBJ, "properties": {"x": s}}  # noqa: E731
    assert schema_incompatibilities(wrap(old), wrap(new)) == expected


def test_refs_resolve_against_their_own_document_and_recursion_ends() -> None:
    node = {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}, "n": {}}}
    old = {**OBJ, "properties": {"tree": {"$ref": "#/$defs/Node"}}, "$defs": {"Node": node}}
    assert schema_incompatibilities(old, old) == []
    retyped = {**node, "properties": {**node["properties"], "n": {"type": "integer"}}}
    new = {**old, "$defs": {"Node": retyped}}
    assert schema_incompatibilities(old, new) == [
        "input 'tree.n': type any value → integer",
    ]


def test_a_version_without_a_schema_accepts_any_object() -> None:
    assert schema_incompatibilities(schema(base), None) == []
    assert schema_incompatibilities(None, schema(base)) == [
        "input 'topic': type any value → string",
        "input 'depth': type any value → integer",
        "input 'notes': type any value → string",
        "input 'topic' is newly required without a default",
        "no longer accepts extra inputs",
    ]


def test_route_compares_with_every_other_current_version() -> None:
    current = {2: schema(base), 3: schema(widened), 4: schema(topic_int)}
    assert route_incompatibilities({2: schema(base)}, 4, schema(topic_int)) == [
        "input 'topic': type string → integer"
    ]
    assert route_incompatibilities(current, 4, schema(topic_int)) == [
        "v2: input 'topic': type string → integer",
        "v3: input 'topic': type string | null → integer",
        "v3: input 'depth': type number → integer",
        "v3: input 'extra' was removed",
    ]
    assert route_incompatibilities({4: schema(topic_int)}, 4, schema(base)) == []


def test_message_names_route_versions_findings_and_the_way_out() -> None:
    message = incompatibility_message(
        "research_agent", "stable", 4, [2], ["input 'topic': type string → integer"]
    )
    assert message == (
        "version 4 of flow 'research_agent' would reject inputs that tag 'stable' (version 2) "
        "accepts: input 'topic': type string → integer. Keep the tag where it is, or move it "
        "anyway with --force (SDK and MCP: force=True)"
    )
    assert "(versions 2, 3)" in incompatibility_message("f", "t", 4, [3, 2], ["x"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("4", frozenset({4})), ("2,3", frozenset({2, 3})), ("x", None)],
)
def test_accepted_annotation(value: str | None, expected: frozenset[int] | None) -> None:
    assert parse_accepted(value) == expected
    if expected:
        assert parse_accepted(format_accepted(expected)) == expected


ROUTE = "research-agent.stable"


def check(versions: set[int], baseline: set[int] | None, accepted: set[int] | None = None) -> Any:
    schemas = {2: schema(base), 3: schema(widened), 4: schema(topic_int)}
    return check_route_schema(
        "research_agent", "stable", ROUTE, versions, baseline, schemas, accepted
    )


def test_route_check_new_route_and_compatible_moves_take_the_new_baseline() -> None:
    assert check({2}, None) == SchemaCheck(
        True,
        "Compatible",
        "version(s) 2 accept every input the route's earlier target accepted",
        (2,),
    )
    assert check({3}, {2}).status is True
    assert check({3}, {2}).baseline == (3,)
    assert check({2}, {2, 3}).baseline == (2,)  # fewer versions: nothing new to accept


def test_route_check_flags_an_incompatible_move_and_keeps_the_baseline() -> None:
    verdict = check({4}, {2})
    assert (verdict.status, verdict.reason, verdict.baseline) == (False, "IncompatibleSchema", (2,))
    assert verdict.message == (
        "version 4 of flow 'research_agent' would reject inputs that tag 'stable' (version 2) "
        "accepts: input 'topic': type string → integer. Its callers may fail: move it back, "
        "or accept the change with kubectl annotate flowroute research-agent.stable "
        "kitaru.dev/schema-accepted=4"
    )
    # Moving on to another version is judged against what the callers had: v2.
    assert check({3}, {2}).status is True
    assert check({4}, {2}, accepted={4}) == SchemaCheck(
        True, "Accepted", "version(s) 4 routed here on purpose (kitaru.dev/schema-accepted)", (4,)
    )
    assert check({4}, {2}, accepted={3}).status is False  # a stale acceptance counts for nothing


def test_route_check_waits_for_an_unknown_version_and_forgets_deleted_ones() -> None:
    verdict = check({9}, {2})
    assert (verdict.status, verdict.reason, verdict.baseline) == (None, "SchemaUnknown", (2,))
    assert check({4}, {8}).status is True  # the earlier target is gone: nothing to compare


def test_route_status_carries_the_condition_and_baseline() -> None:
    spec = FlowRouteSpec(flow="research_agent", tag="stable", exclusive=True, versions=[4])
    now = "2026-01-01T00:00:00Z"
    status = derive_route_status(spec, {2, 4}, None, 1, now, check({4}, {2}))
    assert [(c.type, c.status, c.reason) for c in status.conditions] == [
        ("Ready", "True", "Resolved"),
        ("SchemaCompatible", "False", "IncompatibleSchema"),
    ]
    assert status.schema_baseline == [2]
    assert status.wire()["schemaBaseline"] == [2]
    # Without a verdict (an operator that cannot tell) the previous baseline is kept.
    assert derive_route_status(spec, {2, 4}, status, 1, now).schema_baseline == [2]
