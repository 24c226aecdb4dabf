"""Input-schema compatibility: would a version reject inputs that another one accepts?

A tag's callers send inputs that its current target accepts. Moving (or adding) the tag
to a version whose input schema rejects some of them breaks those callers, so the tag
commands and the operator compare the two schemas first. The comparison is
conservative — a change it cannot prove harmless is reported — and readable: each
finding names the input and what changed, e.g. "input 'topic': type string → integer".

It understands the JSON Schemas `inputs.schema_from_signature` generates (pydantic's:
`type`, `anyOf` unions, `enum`/`const`, `$ref` into `$defs`, nested objects, arrays,
tuples, dicts, bounds) and treats anything else it meets as "must be equal".
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kitaru.core import schema_bounds
from kitaru.core.names import ANNOTATION_SCHEMA_ACCEPTED
from kitaru.core.routing import format_versions

Schema = Mapping[str, Any] | bool

# Keywords that only document: they never change what a schema accepts.
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "default", "examples", "deprecated",
     "readOnly", "writeOnly", "$defs", "definitions"}
)  # fmt: skip
# Bounds: a new value on the accepting side of the old one is a widening.
_LOWER_BOUNDS = frozenset({"minLength", "minItems", "minProperties", "minimum", "exclusiveMinimum"})
_UPPER_BOUNDS = frozenset({"maxLength", "maxItems", "maxProperties", "maximum", "exclusiveMaximum"})
# Compared structurally by `_Compare`, not as plain constraints.
_STRUCTURE = frozenset(
    {"type", "anyOf", "oneOf", "enum", "const", "$ref", "properties", "required",
     "additionalProperties", "items", "prefixItems"}
)  # fmt: skip
_JSON_TYPES = ("null", "boolean", "integer", "number", "string", "array", "object")
# Schemas come from producers: a comparison does at most this many steps (a small schema
# can fan out exponentially through `$ref`s), then reports the change as unchecked.
MAX_COMPARE_STEPS = 20_000


class _TooComplex(Exception):
    """The comparison ran out of MAX_COMPARE_STEPS."""


def schema_incompatibilities(old: Schema | None, new: Schema | None) -> list[str]:
    """What `new` rejects of the inputs `old` accepts, one readable line per finding
    (empty: every input object `old` accepts, `new` accepts too).

    A version without a schema (None or empty) accepts any input object.
    """
    old_root: Schema = old if old or old is False else {"type": "object"}
    new_root: Schema = new if new or new is False else {"type": "object"}
    for side, root in (("old", old_root), ("new", new_root)):
        try:  # cached per schema: the operator compares on every route change
            schema_bounds.validator_for(schema_bounds.schema_json_of(root))
        except schema_bounds.UnsafeSchema as exc:
            return [f"inputs: the {side} input schema cannot be checked: {exc}"]
    try:
        return _Compare(old_root, new_root).schema(old_root, new_root, "")
    except _TooComplex:
        return [
            "inputs: the input schemas are too complex to compare "
            f"(more than {MAX_COMPARE_STEPS:,} steps)"
        ]


def route_incompatibilities(
    current: Mapping[int, Schema | None], version: int, schema: Schema | None
) -> list[str]:
    """What `version` (with `schema`) rejects of the inputs the route's current target
    versions accept (`current`: their schemas). Versions equal to `version` are skipped;
    with several current versions each finding says which one it is about."""
    others = sorted(v for v in current if v != version)
    findings: list[str] = []
    for old_version in others:
        found = schema_incompatibilities(current[old_version], schema)
        prefix = f"v{old_version}: " if len(others) > 1 else ""
        findings.extend(prefix + line for line in found)
    return findings


FORCE_HINT = "Keep the tag where it is, or move it anyway with --force (SDK and MCP: force=True)"


def incompatibility_message(
    flow: str,
    tag: str,
    version: int,
    current: Collection[int],
    findings: Iterable[str],
    remedy: str = FORCE_HINT,
) -> str:
    """One message for every surface: what would break, and how to do it anyway."""
    return (
        f"version {version} of flow '{flow}' would reject inputs that tag '{tag}' "
        f"({'versions' if len(set(current)) > 1 else 'version'} {format_versions(current)}) "
        "accepts: " + "; ".join(findings) + ". " + remedy
    )


@dataclass(frozen=True)
class SchemaCheck:
    """The verdict on a route's latest move, for its `SchemaCompatible` condition.

    `baseline` is what the route's callers are known to be served by: the versions it
    last routed to compatibly (or on purpose). An incompatible move keeps the old
    baseline, so the route stays flagged until it moves back, or the move is accepted.
    """

    status: bool | None  # None: a version's schema is not known yet
    reason: str
    message: str
    baseline: tuple[int, ...]


def check_route_schema(
    flow: str,
    tag: str,
    route_name: str,
    versions: Collection[int],
    baseline: Collection[int] | None,
    schemas: Mapping[int, Schema | None],
    accepted: Collection[int] | None,
) -> SchemaCheck:
    """Whether a route's versions accept what its `baseline` versions accepted
    (`schemas`: of the versions that exist; `accepted`: the `kitaru.dev/schema-accepted`
    annotation). The operator's rule for routes written by anyone, kubectl included."""
    routed = frozenset(versions)
    now = tuple(sorted(routed))
    if accepted is not None and frozenset(accepted) == routed:
        return SchemaCheck(
            True,
            "Accepted",
            f"version(s) {format_versions(routed)} routed here on purpose "
            f"({ANNOTATION_SCHEMA_ACCEPTED})",
            now,
        )
    added = routed - frozenset(baseline or ())
    if baseline is None or not added:
        return SchemaCheck(True, "Compatible", _compatible(routed), now)
    unknown = sorted(v for v in added if v not in schemas)
    if unknown:
        return SchemaCheck(
            None,
            "SchemaUnknown",
            f"version(s) {format_versions(unknown)} not found: cannot compare input schemas",
            tuple(sorted(baseline)),
        )
    current = {v: schemas[v] for v in baseline if v in schemas}
    for version in sorted(added):
        findings = route_incompatibilities(current, version, schemas[version])
        if findings:
            remedy = (
                "Its callers may fail: move it back, or accept the change with "
                f"kubectl annotate flowroute {route_name} "
                f"{ANNOTATION_SCHEMA_ACCEPTED}={format_accepted(routed)}"
            )
            return SchemaCheck(
                False,
                "IncompatibleSchema",
                incompatibility_message(flow, tag, version, sorted(current), findings, remedy),
                tuple(sorted(baseline)),
            )
    return SchemaCheck(True, "Compatible", _compatible(routed), now)


def _compatible(versions: Collection[int]) -> str:
    return (
        f"version(s) {format_versions(versions)} accept every input the route's earlier "
        "target accepted"
    )


class _Compare:
    """One comparison of two schema documents (each resolves `$ref` against its own root)."""

    def __init__(self, old_root: Schema, new_root: Schema) -> None:
        self.old_root = old_root
        self.new_root = new_root
        self.seen: set[tuple[int, int]] = set()
        self.steps = 0

    def spend(self, steps: int = 1) -> None:
        self.steps += steps
        if self.steps > MAX_COMPARE_STEPS:
            raise _TooComplex

    def schema(self, old: Schema, new: Schema, path: str) -> list[str]:
        self.spend()
        old = _resolve(old, self.old_root)
        new = _resolve(new, self.new_root)
        key = (id(old), id(new))
        if key in self.seen:  # a recursive model compared with itself again
            return []
        self.seen.add(key)
        if old is False or new is True or new == {}:
            return []
        if new is False:
            return [_finding(path, "no longer accepts any value")]
        if old is True:
            old = {}
        assert isinstance(old, Mapping) and isinstance(new, Mapping)
        if new == old:
            return []
        if not _constrains(new):
            return []
        if "enum" in old or "const" in old:
            return self._values(old, new, path)
        old_branches = _branches(old, self.old_root, self.spend)
        new_branches = _branches(new, self.new_root, self.spend)
        if old_branches is None or new_branches is None:
            return [_finding(path, "its schema changed in a way that is not checked")]
        findings: list[str] = []
        for branch in old_branches:
            candidates = [b for b in new_branches if _type_covers(b, branch)]
            if not candidates:
                findings.append(_finding(path, f"type {_describe(old)} → {_describe(new)}"))
                return findings
            # The old alternative fits if some new one takes it whole; else report the
            # closest new one's findings.
            results = sorted((self._branch(branch, c, path) for c in candidates), key=len)
            findings.extend(results[0])
        return findings

    def _values(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> list[str]:
        values = old["enum"] if "enum" in old else [old["const"]]
        schema = {**_as_dict(self.new_root), **new}
        rejected = []
        for value in values:
            self.spend(100)  # a check of its own, bounded by schema_bounds
            if not schema_bounds.accepts(schema, value):
                rejected.append(value)
        if not rejected:
            return []
        return [_finding(path, "no longer accepts " + ", ".join(_literal(v) for v in rejected))]

    def _branch(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> list[str]:
        findings = self._constraints(old, new, path)
        if _single_type(new) == "object" or "properties" in new:
            findings += self._object(old, new, path)
        if _single_type(new) == "array" or "items" in new or "prefixItems" in new:
            findings += self._array(old, new, path)
        return findings

    def _constraints(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> list[str]:
        findings = []
        for key in sorted(set(new) - _ANNOTATIONS - _STRUCTURE):
            before, after = old.get(key), new[key]
            if before == after:
                continue
            if before is not None and key in _LOWER_BOUNDS and _number(after) <= _number(before):
                continue
            if before is not None and key in _UPPER_BOUNDS and _number(after) >= _number(before):
                continue
            was = "none" if before is None else _literal(before)
            findings.append(_finding(path, f"{key} {was} → {_literal(after)}"))
        return findings

    def _object(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> list[str]:
        old_props: Mapping[str, Any] = old.get("properties") or {}
        new_props: Mapping[str, Any] = new.get("properties") or {}
        old_extra: Schema = old.get("additionalProperties", True)
        new_extra: Schema = new.get("additionalProperties", True)
        findings: list[str] = []
        for name in [*old_props, *(n for n in new_props if n not in old_props)]:
            where = f"{path}.{name}" if path else name
            if name in old_props and name not in new_props and new_extra is False:
                findings.append(f"input '{where}' was removed")
                continue
            before = old_props.get(name, old_extra)
            after = new_props.get(name, new_extra)
            findings += self.schema(before, after, where)
        added = sorted(set(new.get("required") or ()) - set(old.get("required") or ()))
        for name in added:
            where = f"{path}.{name}" if path else name
            findings.append(f"input '{where}' is newly required without a default")
        if new_extra is False and old_extra is not False:
            findings.append(
                f"input '{path}' no longer accepts extra keys" if path
                else "no longer accepts extra inputs"
            )  # fmt: skip
        elif new_extra is not False and old_extra is not False:
            findings += self.schema(old_extra, new_extra, f"{path}.*" if path else "*")
        return findings

    def _array(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> list[str]:
        old_prefix: list[Any] = list(old.get("prefixItems") or [])
        new_prefix: list[Any] = list(new.get("prefixItems") or [])
        old_items: Schema = old.get("items", True)
        new_items: Schema = new.get("items", True)
        findings: list[str] = []
        for index in range(max(len(old_prefix), len(new_prefix))):
            before = old_prefix[index] if index < len(old_prefix) else old_items
            after = new_prefix[index] if index < len(new_prefix) else new_items
            findings += self.schema(before, after, f"{path}[{index}]")
        findings += self.schema(old_items, new_items, f"{path}[]")
        return findings


def _finding(path: str, what: str) -> str:
    return f"input '{path}': {what}" if path else f"inputs: {what}"


def _resolve(schema: Schema, root: Schema) -> Schema:
    """Follow local `$ref`s (`#/$defs/Name`); sibling keywords are kept."""
    hops = 0
    while isinstance(schema, Mapping) and isinstance(schema.get("$ref"), str) and hops < 32:
        ref = schema["$ref"]
        target: Any = root
        if not ref.startswith("#"):
            return schema
        for part in filter(None, ref[1:].split("/")):
            target = target.get(part) if isinstance(target, Mapping) else None
        if not isinstance(target, Mapping | bool):
            return schema
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**target, **rest} if isinstance(target, Mapping) and rest else target
        hops += 1
    return schema


def _constrains(schema: Mapping[str, Any]) -> bool:
    return any(key not in _ANNOTATIONS for key in schema)


def _branches(
    schema: Mapping[str, Any], root: Schema, spend: Callable[[], None]
) -> list[Mapping[str, Any]] | None:
    """The alternatives a schema accepts, each of one type or untyped; None when it uses
    a combinator this module does not reason about (allOf, not, if/then). `spend` is
    charged once per schema visited (nested unions through `$ref`s fan out)."""
    spend()
    if any(key in schema for key in ("allOf", "not", "if", "then", "else")):
        return None
    union = schema.get("anyOf", schema.get("oneOf"))
    if union is not None:
        base = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
        result: list[Mapping[str, Any]] = []
        for option in union:
            option = _resolve(option, root)
            if option is False:
                continue
            if option is True:
                option = {}
            branches = _branches({**base, **option}, root, spend)
            if branches is None:
                return None
            result += branches
        return result
    types = schema.get("type")
    if isinstance(types, list):
        return [{**schema, "type": t} for t in types]
    return [schema]


def _single_type(schema: Mapping[str, Any]) -> str | None:
    types = schema.get("type")
    return types if isinstance(types, str) else None


def _type_covers(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """Whether `new`'s type admits every value of `old`'s type (constraints apart)."""
    if "enum" in new or "const" in new:
        return False  # an open type into a fixed set of values: narrowed
    after, before = _single_type(new), _single_type(old)
    if after is None:
        return True
    if before is None:
        return False
    return after == before or (after == "number" and before == "integer")


def _describe(schema: Mapping[str, Any]) -> str:
    if "enum" in schema:
        return "one of " + ", ".join(_literal(v) for v in schema["enum"])
    if "const" in schema:
        return _literal(schema["const"])
    union = schema.get("anyOf", schema.get("oneOf"))
    if union is not None:
        return " | ".join(_describe(o) if isinstance(o, Mapping) else "any" for o in union)
    types = schema.get("type")
    if isinstance(types, list):
        return " | ".join(str(t) for t in types)
    if isinstance(types, str):
        return types
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    return "any value"


def _literal(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else repr(value)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else float("nan")


def _as_dict(root: Schema) -> dict[str, Any]:
    """The root's `$defs`, so a validator built from a sub-schema resolves its `$ref`s."""
    if not isinstance(root, Mapping):
        return {}
    return {k: root[k] for k in ("$defs", "definitions") if k in root}


def format_accepted(versions: Iterable[int]) -> str:
    """The `kitaru.dev/schema-accepted` annotation's value: versions, comma-separated."""
    return ",".join(str(v) for v in sorted(set(versions)))


def parse_accepted(value: str | None) -> frozenset[int] | None:
    """The versions an annotation value names (None: absent or not a list of numbers)."""
    if not value:
        return None
    try:
        return frozenset(int(part) for part in value.split(","))
    except ValueError:
        return None
