"""Input schemas are data from producers (or anyone with kubectl): checking a value
against one must cost a bounded amount of work, whatever the schema says.

What jsonschema alone would do with a hostile schema, and what this module does instead:

- `pattern` / `patternProperties` run on Python's backtracking `re`: `^(a|a)*$` takes
  seconds on 30 characters. Here every pattern runs on RE2 (`google-re2`), in time linear
  in the string; a pattern RE2 cannot run (lookaround, backreferences) is refused.
- `{"$ref": "#"}` (or any cycle of `$ref`/`allOf`/`anyOf`/... that applies a schema to
  the same value again) recurses until RecursionError. Here a schema is refused when a
  cycle does not descend into the value (through `properties`, `items`, ...); recursion
  that descends is bounded by the value's depth (`payloads.MAX_DEPTH`).
- A `$ref` to a URL is fetched with urllib: no timeout, from wherever the checker runs.
  Here only references inside the schema (`#...`) are allowed.
- A small schema can fan out exponentially (`allOf` of two `$ref`s to a definition that
  does the same, 60 levels deep); `uniqueItems` compares pairs. Here one check applies at
  most MAX_CHECK_STEPS keywords (a `uniqueItems` or `enum` counts its size) and then
  stops with `SchemaTooComplex`; `uniqueItems` sorts canonical forms instead of
  comparing pairs.
- Errors are collected up to MAX_REPORTED_ERRORS, each message cut to a readable length.

Everything that evaluates a tenant's schema goes through here: the client (deploy,
invoke, schedules, tags), the runner, the schema-compatibility guard and the operator
(which also runs it in a worker process with a time limit, `kitaru_operator.input_checks`).
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from typing import Any
from urllib.parse import unquote

import re2
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema.validators import extend
from referencing import Registry

from kitaru.core.payloads import KIB, MAX_DEPTH, json_problem, too_large

MAX_SCHEMA_BYTES = 96 * KIB
MAX_CHECK_STEPS = 100_000
# `$ref`s, `allOf`s, ... applied one inside another to one value, without descending.
MAX_IN_PLACE_CHAIN = 32
MAX_REPORTED_ERRORS = 20
MAX_MESSAGE_CHARS = 300

# Keywords whose subschemas apply to the same value, and those that descend into it.
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_MANY = ("allOf", "anyOf", "oneOf")
_DESCEND_ONE = (
    "additionalProperties",
    "unevaluatedProperties",
    "propertyNames",
    "items",
    "contains",
    "unevaluatedItems",
)
_UNSUPPORTED = ("$dynamicRef", "$recursiveRef")


class UnsafeSchema(ValueError):
    """A schema this module refuses to evaluate; the message says why and where."""


class SchemaTooComplex(RuntimeError):
    """A check ran out of its MAX_CHECK_STEPS budget."""


# --- the schema, before anything is evaluated ----------------------------------------

Path = tuple[str, ...]


def _pointer(path: Path) -> str:
    return "#" + "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in path)


@dataclass
class _Document:
    """One schema document: where its anchors are, and how a local `$ref` resolves."""

    root: Any
    anchors: dict[str, Path]

    def resolve(self, ref: str, at: Path) -> Path:
        if not ref.startswith("#"):
            raise UnsafeSchema(
                f"$ref {ref!r} at {_pointer(at)} points outside the schema: only references "
                "inside it (#/$defs/Name) are allowed"
            )
        fragment = unquote(ref[1:])
        if fragment and not fragment.startswith("/"):
            if fragment not in self.anchors:
                raise UnsafeSchema(f"$ref {ref!r} at {_pointer(at)}: no $anchor {fragment!r}")
            return self.anchors[fragment]
        path: list[str] = []
        node = self.root
        for raw in fragment.split("/")[1:] if fragment else []:
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise UnsafeSchema(f"$ref {ref!r} at {_pointer(at)} points at nothing")
            path.append(part)
        if not isinstance(node, Mapping | bool):
            raise UnsafeSchema(f"$ref {ref!r} at {_pointer(at)} does not point at a schema")
        return tuple(path)

    def node(self, path: Path) -> Any:
        node = self.root
        for part in path:
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node


def _subschemas(node: Mapping[str, Any], path: Path) -> Iterator[tuple[Path, bool]]:
    """(path, applies to the same value) of each subschema `node` applies."""
    for key in _IN_PLACE_ONE:
        if key in node:
            yield (*path, key), True
    for key in _IN_PLACE_MANY:
        if isinstance(node.get(key), list):
            for index in range(len(node[key])):
                yield (*path, key, str(index)), True
    if isinstance(node.get("dependentSchemas"), Mapping):
        for name in node["dependentSchemas"]:
            yield (*path, "dependentSchemas", name), True
    for key in _DESCEND_ONE:
        if key in node:
            yield (*path, key), False
    for key in ("properties", "patternProperties", "$defs", "definitions"):
        if isinstance(node.get(key), Mapping):  # $defs apply nothing by themselves
            for name in node[key]:
                yield (*path, key, name), False
    if isinstance(node.get("prefixItems"), list):
        for index in range(len(node["prefixItems"])):
            yield (*path, "prefixItems", str(index)), False


def _anchors(root: Any) -> dict[str, Path]:
    anchors: dict[str, Path] = {}
    stack: list[tuple[Path, Any]] = [((), root)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, Mapping):
            continue
        if isinstance(node.get("$anchor"), str):
            anchors[node["$anchor"]] = path
        for child, _ in _subschemas(node, path):
            stack.append((child, _node_at(node, child[len(path) :])))
    return anchors


def _node_at(node: Any, rest: Path) -> Any:
    for part in rest:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re2._Regexp:
    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        raise UnsafeSchema(
            f"pattern {pattern!r} cannot be matched in linear time ({_re2_reason(exc)}): "
            "write it without lookaround or backreferences"
        ) from exc


def _re2_reason(exc: re2.error) -> str:
    detail = exc.args[0] if exc.args else exc
    return detail.decode() if isinstance(detail, bytes) else str(detail)


def check_schema(schema: Any) -> None:
    """Raise UnsafeSchema unless `schema` is a JSON Schema (2020-12) this module can
    check any value against with bounded work (see the module docstring)."""
    if not isinstance(schema, Mapping | bool):
        raise UnsafeSchema(f"a schema is a JSON object, not {type(schema).__name__}")
    problem = json_problem(schema)
    if problem:
        raise UnsafeSchema(problem)
    size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_SCHEMA_BYTES:
        raise UnsafeSchema(too_large("it is", size, MAX_SCHEMA_BYTES))
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise UnsafeSchema(cut(exc.message)) from exc
    except RecursionError as exc:  # the metaschema recurses once per level: not expected
        raise UnsafeSchema(f"nested more than {MAX_DEPTH} levels deep") from exc
    document = _Document(schema, _anchors(schema))
    in_place = _walk(document)
    _no_cycles(in_place)


def _walk(document: _Document) -> dict[Path, list[Path]]:
    """Check every schema node reachable from the root (refs, patterns, keywords), and
    return the graph of in-place applications between them."""
    in_place: dict[Path, list[Path]] = {}
    stack: list[Path] = [()]
    while stack:
        path = stack.pop()
        if path in in_place:
            continue
        node = document.node(path)
        edges: list[Path] = []
        in_place[path] = edges
        if not isinstance(node, Mapping):
            continue
        for keyword in _UNSUPPORTED:
            if keyword in node:
                raise UnsafeSchema(f"{keyword} at {_pointer(path)} is not supported")
        if path and "$id" in node:
            raise UnsafeSchema(f"$id at {_pointer(path)}: an input schema is one document")
        if "unevaluatedProperties" in node and "patternProperties" in node:
            raise UnsafeSchema(
                f"unevaluatedProperties with patternProperties at {_pointer(path)} is not "
                "supported: use additionalProperties"
            )
        if isinstance(node.get("pattern"), str):
            _compiled(node["pattern"])
        for pattern in node.get("patternProperties") or {}:
            _compiled(pattern)
        if isinstance(node.get("$ref"), str):
            target = document.resolve(node["$ref"], path)
            edges.append(target)
            stack.append(target)
        for child, same_value in _subschemas(node, path):
            if same_value:
                edges.append(child)
            stack.append(child)
    return in_place


def _no_cycles(in_place: dict[Path, list[Path]]) -> None:
    """Refuse a cycle of in-place applications, or a chain longer than MAX_IN_PLACE_CHAIN
    (iterative depth-first search; `longest` memoises each node's longest chain)."""
    longest: dict[Path, int] = {}
    on_stack: set[Path] = set()
    for start in in_place:
        if start in longest:
            continue
        stack: list[tuple[Path, int]] = [(start, 0)]
        while stack:
            path, index = stack.pop()
            edges = in_place.get(path, [])
            if index == 0:
                on_stack.add(path)
            if index < len(edges):
                stack.append((path, index + 1))
                child = edges[index]
                if child in on_stack:
                    raise UnsafeSchema(
                        f"{_pointer(child)} applies itself to the same value again (through "
                        f"{_pointer(path)}): a recursive schema must descend into the value "
                        "(properties, items, ...)"
                    )
                if child not in longest:
                    stack.append((child, 0))
                continue
            on_stack.discard(path)
            longest[path] = 1 + max((longest[c] for c in edges), default=0)
            if longest[path] > MAX_IN_PLACE_CHAIN:
                raise UnsafeSchema(
                    f"{_pointer(path)} applies more than {MAX_IN_PLACE_CHAIN} schemas one "
                    "inside another to the same value ($ref, allOf, anyOf, ...)"
                )


# --- evaluation with a budget ---------------------------------------------------------


class _Budget:
    __slots__ = ("left",)

    def __init__(self, steps: int) -> None:
        self.left = steps

    def spend(self, steps: int) -> None:
        self.left -= steps
        if self.left < 0:
            raise SchemaTooComplex(
                f"checking this value against the schema takes more than {MAX_CHECK_STEPS:,} "
                "steps: simplify the schema"
            )


_BUDGET: contextvars.ContextVar[_Budget] = contextvars.ContextVar("kitaru_schema_budget")


# Keywords whose own work grows with the value's size (descending into items is charged
# by the keywords that run there): matching names against patterns, comparing items.
_PER_ITEM = frozenset({"uniqueItems", "patternProperties", "additionalProperties"})


def _counted(name: str, keyword: Any) -> Any:
    """`keyword`, charging the budget for what it is about to do: one step, plus the
    size of its own list or object (enum, required, properties, allOf, ...), plus, for
    the keywords in _PER_ITEM, the value's items (times its patterns)."""
    per_item = name in _PER_ITEM

    def apply(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
        own = len(value) if isinstance(value, list | Mapping) else 0
        cost = 1 + own
        if per_item and isinstance(instance, list | Mapping):
            patterns = len(schema.get("patternProperties") or ()) if name != "uniqueItems" else 0
            cost += len(instance) * max(patterns, 1)
        _BUDGET.get().spend(cost)
        errors = keyword(validator, value, instance, schema)
        if errors is not None:
            yield from errors

    return apply


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if validator.is_type(instance, "string") and not _compiled(pattern).search(instance):
        yield ValidationError(f"{cut(repr(instance))} does not match {pattern!r}")


def _matches_any(patterns: Mapping[str, Any], name: str) -> bool:
    return any(_compiled(p).search(name) for p in patterns)


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Any
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        regex = _compiled(pattern)
        for name, value in instance.items():
            if regex.search(name):
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


def _additional_properties(validator: Any, extra: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    known = schema.get("properties") or {}
    patterns = schema.get("patternProperties") or {}
    extras = [n for n in instance if n not in known and not _matches_any(patterns, n)]
    if validator.is_type(extra, "object"):
        for name in extras:
            yield from validator.descend(instance[name], extra, path=name)
    elif extra is False and extras:
        names = ", ".join(repr(n) for n in sorted(extras))
        yield ValidationError(cut(f"Additional properties are not allowed ({names} unexpected)"))


def _canonical(value: Any) -> str:
    """A form equal for JSON-equal values (1 and 1.0 alike; true is not 1)."""

    def normal(item: Any) -> Any:
        if isinstance(item, float) and item.is_integer():
            return int(item)
        if isinstance(item, Mapping):
            return {k: normal(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [normal(v) for v in item]
        return item

    return json.dumps(normal(value), sort_keys=True, separators=(",", ":"))


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if unique and validator.is_type(instance, "array"):
        forms = [_canonical(item) for item in instance]
        if len(set(forms)) != len(forms):
            yield ValidationError("the array has non-unique elements")


_OVERRIDES = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
    "uniqueItems": _unique_items,
}
_BoundedValidator = extend(
    Draft202012Validator,
    validators={
        keyword: _counted(keyword, _OVERRIDES.get(keyword, function))
        for keyword, function in {**Draft202012Validator.VALIDATORS, **_OVERRIDES}.items()
    },
)
# No retrieval: every reference is local (check_schema), so nothing is ever fetched.
_NO_REMOTE = Registry()


def validator_for(schema_json: str) -> Any:
    """The bounded validator of a schema (its canonical JSON). Raises UnsafeSchema
    (`check_schema`)."""
    verdict = _verdict(schema_json)
    if isinstance(verdict, UnsafeSchema):
        raise UnsafeSchema(str(verdict))
    return verdict


@lru_cache(maxsize=512)
def _verdict(schema_json: str) -> Any:
    """One analysis per distinct schema, refusals included: the runs of a version share
    its validator, and a hostile version costs its analysis once, not once per run."""
    schema = json.loads(schema_json)
    try:
        check_schema(schema)
    except UnsafeSchema as exc:
        return exc
    return _BoundedValidator(schema, registry=_NO_REMOTE)


def schema_errors(schema_json: str, value: Any) -> list[ValidationError]:
    """The first MAX_REPORTED_ERRORS errors of `value` against the schema (its canonical
    JSON, the cache key). Raises UnsafeSchema, or SchemaTooComplex past the budget."""
    validator = validator_for(schema_json)
    token = _BUDGET.set(_Budget(MAX_CHECK_STEPS))
    try:
        return list(islice(validator.iter_errors(value), MAX_REPORTED_ERRORS))
    except RecursionError as exc:
        raise SchemaTooComplex(
            "checking this value against the schema nests too deeply: simplify the schema"
        ) from exc
    finally:
        _BUDGET.reset(token)


def accepts(schema: Mapping[str, Any] | bool, value: Any) -> bool:
    """Whether `schema` accepts `value`; a schema that cannot be checked with bounded
    work accepts nothing (so callers that compare schemas err towards "incompatible")."""
    try:
        return not schema_errors(schema_json_of(schema), value)
    except (UnsafeSchema, SchemaTooComplex):
        return False


def schema_json_of(schema: Mapping[str, Any] | bool) -> str:
    """The canonical JSON of a schema: the key of its cached analysis and validator."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cut(text: str) -> str:
    """`text`, cut to MAX_MESSAGE_CHARS (an error quotes the value it is about)."""
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    return text[: MAX_MESSAGE_CHARS - 1] + "…"
