"""Property-based fuzzing of what tenants send (issue 23): inputs, schemas, names and
selectors against the client's validation and the operator's pure core.

Each property states an invariant that must hold for every value, and hypothesis looks
for a counterexample. The run is reproducible and bounded: `derandomize` (the examples
are a function of the test, so CI and a developer see the same ones), a fixed number of
examples, no per-example deadline (the bound is the whole property's, below), and the
whole module in well under 20 s on a loaded 2-core machine.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kitaru.core import schema_bounds
from kitaru.core.compat import schema_incompatibilities
from kitaru.core.inputs import InvalidInputs, check_inputs, merge_inputs, validate_inputs
from kitaru.core.names import (
    FLOW_MAX_LENGTH,
    FLOW_PATTERN,
    TAG_MAX_LENGTH,
    TAG_PATTERN,
    InvalidName,
    InvalidVersion,
    deployment_name,
    parse_deployment_name,
    route_name,
    validate_flow,
    validate_tag,
    validate_version,
)
from kitaru.core.payloads import json_problem
from kitaru.core.routing import ResolutionError, RouteView, resolve

FUZZ = settings(
    derandomize=True,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROPERTY_SECONDS = 6.0  # a property that takes longer has found a slow path

# --- what tenants send ----------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=12,
)
inputs = st.dictionaries(st.text(max_size=12), json_values, max_size=4)
# Anything Python may hand the client: non-JSON values included.
anything = st.recursive(
    st.one_of(
        scalars,
        st.floats(),
        st.binary(max_size=4),
        st.sets(st.integers(), max_size=2),
        st.dates(),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=4), st.integers()), inner, max_size=4),
    ),
    max_leaves=15,
)

patterns = st.sampled_from(
    ["^(a|a)*$", "(a+)+b", "^[a-z]+$", "(?=x)", r"(a)\1", "[", r"\d{2,}", "", ".*", "a{1001}"]
)
refs = st.sampled_from(["#", "#/$defs/a", "#/$defs/b", "#/properties", "#/nope", "http://x/"])


def _schemas(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keyword = st.one_of(
        st.tuples(st.just("type"), st.sampled_from(["string", "integer", "object", "array"])),
        st.tuples(st.just("pattern"), patterns),
        st.tuples(st.just("$ref"), refs),
        st.tuples(st.sampled_from(["allOf", "anyOf", "oneOf"]), st.lists(inner, max_size=3)),
        st.tuples(st.sampled_from(["not", "items", "additionalProperties"]), inner),
        st.tuples(st.just("properties"), st.dictionaries(st.sampled_from("abx"), inner)),
        st.tuples(st.just("patternProperties"), st.dictionaries(patterns, inner, max_size=2)),
        st.tuples(st.just("$defs"), st.dictionaries(st.sampled_from("ab"), inner, max_size=2)),
        st.tuples(st.sampled_from(["enum", "const"]), st.lists(scalars, max_size=3)),
        st.tuples(st.sampled_from(["minLength", "maxItems", "minimum"]), st.integers(0, 5)),
        st.tuples(st.just("uniqueItems"), st.booleans()),
        st.tuples(st.just("required"), st.lists(st.sampled_from("abx"), max_size=2)),
    )
    return st.lists(keyword, max_size=4).map(dict)


schemas: st.SearchStrategy[Any] = st.recursive(st.booleans() | st.just({}), _schemas, max_leaves=8)


def _bounded(started: float) -> None:
    assert time.perf_counter() - started < PROPERTY_SECONDS


# --- inputs and schemas ---------------------------------------------------------------


@FUZZ
@given(value=anything)
def test_check_inputs_accepts_exactly_plain_json_objects(value: Any) -> None:
    """Never anything but InvalidInputs; what it accepts is a JSON object that encodes."""
    try:
        check_inputs(value)
    except InvalidInputs as exc:
        assert exc.message
        return
    assert isinstance(value, dict) and json_problem(value) is None
    json.dumps(value, allow_nan=False)


@FUZZ
@given(value=json_values)
def test_json_problem_agrees_with_the_json_encoder_and_the_depth_bound(value: Any) -> None:
    problem = json_problem(value, max_depth=3)
    json.dumps(value, allow_nan=False)  # every generated value is plain JSON
    if problem is not None:
        assert "nested more than 3 levels" in problem


@FUZZ
@given(schema=schemas, value=inputs)
def test_any_schema_and_inputs_end_in_a_verdict_within_the_bound(schema: Any, value: Any) -> None:
    """A producer's schema and a consumer's inputs: the check returns or raises
    InvalidInputs (never RecursionError, a regex error or a fetch), in bounded time."""
    if not isinstance(schema, dict):
        schema = {"allOf": [schema]}
    began = time.perf_counter()
    try:
        validate_inputs(value, schema)
    except InvalidInputs as exc:
        assert exc.message and len(exc.message) < 20 * (schema_bounds.MAX_MESSAGE_CHARS + 40)
    _bounded(began)


@FUZZ
@given(schema=schemas)
def test_a_schema_the_bounds_accept_never_fails_to_evaluate(schema: Any) -> None:
    """check_schema is the gate: past it, evaluation raises nothing but the budget."""
    try:
        schema_bounds.check_schema(schema)
    except schema_bounds.UnsafeSchema:
        return
    for value in (None, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab", [1, [2]], {"a": {"b": "x"}}):
        with contextlib.suppress(schema_bounds.SchemaTooComplex):
            schema_bounds.schema_errors(schema_bounds.schema_json_of(schema), value)


@FUZZ
@given(old=schemas, new=schemas)
def test_the_compatibility_guard_always_answers(old: Any, new: Any) -> None:
    """Any two schemas: a list of readable findings, in bounded time; a schema compared
    with itself breaks no caller (when it can be checked at all)."""
    began = time.perf_counter()
    findings = schema_incompatibilities(old, new)
    assert all(isinstance(f, str) and f for f in findings)
    try:
        schema_bounds.check_schema(old)
    except schema_bounds.UnsafeSchema:
        pass
    else:
        assert schema_incompatibilities(old, old) == []
    _bounded(began)


@FUZZ
@given(deploy=inputs, invoke=inputs)
def test_invocation_inputs_win_key_by_key(deploy: Any, invoke: Any) -> None:
    merged = merge_inputs(deploy, invoke)
    assert set(merged) == set(deploy) | set(invoke)
    assert all(merged[k] == v for k, v in invoke.items())


# --- names and selectors --------------------------------------------------------------

names = st.one_of(
    st.from_regex(r"[a-z][a-z0-9_]{0,60}", fullmatch=True),
    st.text(max_size=70),
    st.sampled_from(["a\n", "default", "a::b", "A", "_a", "a-b", "a" * 49, "é"]),
)
tags = st.one_of(
    st.from_regex(r"[a-z0-9][-a-z0-9]{0,70}", fullmatch=True),
    st.text(max_size=70),
    st.sampled_from(["default", "a-", "-a", "a\n", "a" * 64, "Stable"]),
)
# What the CRDs (Go's RE2, whole-string) accept; Python's `$` would also take a final \n.
CRD_FLOW = re.compile(FLOW_PATTERN.rstrip("$") + r"\Z")
CRD_TAG = re.compile(TAG_PATTERN.rstrip("$") + r"\Z")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")


@FUZZ
@given(flow=names, version=st.integers(min_value=-3, max_value=10**18))
def test_a_flow_name_the_client_accepts_is_one_the_api_server_accepts(
    flow: str, version: int
) -> None:
    try:
        validate_flow(flow)
    except InvalidName:
        assert not (CRD_FLOW.match(flow) and len(flow) <= FLOW_MAX_LENGTH)
        return
    assert CRD_FLOW.match(flow) and len(flow) <= FLOW_MAX_LENGTH and "::" not in flow
    try:
        validate_version(version)
    except InvalidVersion:
        assert version < 1
        return
    name = deployment_name(flow, version)
    assert DNS_LABEL.match(name) or len(name) > 63  # the object name the CEL rule demands
    assert parse_deployment_name(name) == (flow, version)  # the name gives both back


@FUZZ
@given(flow=st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True), tag=tags)
def test_a_tag_the_client_accepts_is_one_the_api_server_accepts(flow: str, tag: str) -> None:
    try:
        validate_tag(tag)
    except InvalidName:
        assert not (CRD_TAG.match(tag) and len(tag) <= TAG_MAX_LENGTH)
        return
    assert CRD_TAG.match(tag) and len(tag) <= TAG_MAX_LENGTH
    flow_dns, _, route_tag = route_name(flow, tag).partition(".")
    assert (flow_dns, route_tag) == (flow.replace("_", "-"), tag)


class _Routes:
    def __init__(self, versions: set[int], routes: dict[str, RouteView]) -> None:
        self.versions, self.routes = versions, routes

    def has_deployments(self, flow: str) -> bool:
        return bool(self.versions)

    def has_version(self, flow: str, version: int) -> bool:
        return version in self.versions

    def route(self, flow: str, tag: str) -> RouteView | None:
        return self.routes.get(tag)


route_views = st.builds(
    lambda tag, exclusive, versions: RouteView("f", tag, exclusive, frozenset(versions)),
    st.sampled_from(["default", "stable", "canary"]),
    st.booleans(),
    st.sets(st.integers(1, 6), max_size=3),
)


@FUZZ
@given(
    versions=st.sets(st.integers(1, 6), max_size=4),
    routes=st.lists(route_views, max_size=3),
    tag=st.one_of(st.none(), st.sampled_from(["default", "stable", "nope"])),
    version=st.one_of(st.none(), st.integers(0, 7)),
    key=st.one_of(st.none(), st.text(max_size=10)),
)
def test_resolution_names_an_existing_version_or_a_resolution_error(
    versions: set[int], routes: list[RouteView], tag: Any, version: Any, key: Any
) -> None:
    lookup = _Routes(versions, {r.tag: r for r in routes})
    try:
        resolution = resolve(lookup, "f", tag, version, routing_key=key, invocation="run-1")
    except ResolutionError as exc:
        assert exc.message
        return
    assert resolution.version in versions
    if version is not None:
        assert resolution.version == version
    else:
        route = lookup.routes[tag or "default"]
        assert resolution.version in route.versions
