"""Flow inputs: merge, JSON Schema validation, hashing, and schemas from signatures."""

from __future__ import annotations

import enum
import hashlib
import inspect
import json
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from pydantic import BaseModel

from kitaru.core.payloads import KIB, json_problem, too_large

_JSON = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}

# The run gets its inputs and input schema as environment variables (KITARU_INPUTS,
# KITARU_INPUT_SCHEMA), each at most 128 KiB on Linux; the schema carries the deploy-time
# inputs as defaults. Inputs are parameters: large data goes by reference.
MAX_INPUTS_BYTES = 64 * KIB
MAX_SCHEMA_BYTES = 96 * KIB


class InvalidInputs(ValueError):
    """Inputs that do not match the flow's input schema; the message names each field."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def merge_inputs(deploy: Mapping[str, Any], invoke: Mapping[str, Any]) -> dict[str, Any]:
    """Deploy-time inputs overridden key by key by the invocation's inputs."""
    return {**deploy, **invoke}


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def inputs_hash(inputs: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of `inputs` (key order does not matter)."""
    return hashlib.sha256(canonical_json(inputs).encode()).hexdigest()


def check_inputs(inputs: object) -> None:
    """Raise InvalidInputs unless `inputs` is a JSON object of plain, finite JSON values,
    nested at most `payloads.MAX_DEPTH` levels and at most MAX_INPUTS_BYTES as JSON."""
    if not isinstance(inputs, Mapping):
        kind = "null" if inputs is None else type(inputs).__name__
        raise InvalidInputs(
            f'inputs must be a JSON object of input names and values like {{"topic": "..."}}, '
            f"not {kind}"
        )
    problem = json_problem(inputs)
    if problem:
        raise InvalidInputs(f"invalid inputs: {problem}")
    size = len(canonical_json(inputs).encode())
    if size > MAX_INPUTS_BYTES:
        raise InvalidInputs(
            too_large("inputs are", size, MAX_INPUTS_BYTES)
            + ": pass large data by reference (a URL or an object-store key)"
        )


@lru_cache(maxsize=512)
def _validator(schema_json: str) -> Draft202012Validator:
    """One compiled validator per distinct schema: invocations of a version share it."""
    size = len(schema_json.encode())
    if size > MAX_SCHEMA_BYTES:
        raise InvalidInputs(too_large("the deployment's input schema is", size, MAX_SCHEMA_BYTES))
    schema = json.loads(schema_json)
    problem = json_problem(schema)
    if problem:
        raise InvalidInputs(f"the deployment's input schema is invalid: {problem}")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise InvalidInputs(f"the deployment's input schema is invalid: {exc.message}") from exc
    return Draft202012Validator(schema)


def validate_inputs(inputs: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Raise InvalidInputs naming every offending field and its problem (after
    `check_inputs`: plain JSON, shallow and small enough to run)."""
    check_inputs(inputs)
    validator = _validator(canonical_json(schema))
    errors = sorted(validator.iter_errors(dict(inputs)), key=lambda e: list(map(str, e.path)))
    if errors:
        raise InvalidInputs("invalid inputs: " + "; ".join(_describe(e) for e in errors))


def validate_deploy_inputs(inputs: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Deploy-time inputs are representative values: they may leave required inputs to
    the invocations, but what they give must fit the schema."""
    validate_inputs(inputs, {key: value for key, value in schema.items() if key != "required"})


def _describe(error: ValidationError) -> str:
    if error.validator in ("anyOf", "oneOf") and error.context:
        # "not valid under any of the given schemas" says nothing; name the closest miss.
        error = best_match(error.context)
    field = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [name for name in error.validator_value if name not in error.instance]
        where = f" of input '{field}'" if field else ""
        return f"missing required input{where} " + ", ".join(f"'{m}'" for m in missing)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {}))
        unknown = sorted(k for k in error.instance if k not in known)
        expected = ", ".join(sorted(known)) or "none"
        where = f" in input '{field}'" if field else ""
        return (
            f"unknown input{where} "
            + ", ".join(f"'{u}'" for u in unknown)
            + f" (expected: {expected})"
        )
    return f"input '{field}': {error.message}" if field else error.message


# --- schema from a flow signature ---------------------------------------------------


def schema_from_signature(func: Callable[..., Any], deploy_inputs: Mapping[str, Any]) -> dict:
    """JSON Schema of a flow's keyword inputs, built from its type hints.

    Deploy-time values and Python defaults become `default`; a parameter with
    neither is required. Unknown inputs are rejected unless the flow takes **kwargs.
    """
    signature = inspect.signature(func)
    hints = _type_hints(func, signature)
    defs: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    open_ended = False
    for name, param in signature.parameters.items():
        if param.kind is param.VAR_KEYWORD:
            open_ended = True
            continue
        if param.kind in (param.VAR_POSITIONAL, param.POSITIONAL_ONLY):
            continue
        prop = _type_schema(hints.get(name, Any), defs)
        if name in deploy_inputs:
            prop["default"] = deploy_inputs[name]
        elif param.default is not param.empty:
            if _json_safe(param.default):
                prop["default"] = param.default
        else:
            required.append(name)
        properties[name] = prop
    unknown = sorted(set(deploy_inputs) - set(properties))
    if unknown and not open_ended:
        raise InvalidInputs(
            f"unknown input {', '.join(repr(u) for u in unknown)} for flow "
            f"'{func.__name__}' (expected: {', '.join(properties) or 'none'})"
        )
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "additionalProperties": open_ended,
    }
    if required:
        schema["required"] = required
    if defs:
        schema["$defs"] = defs
    return schema


def _type_hints(func: Callable[..., Any], signature: inspect.Signature) -> dict[str, Any]:
    """Resolved annotations; one that cannot be resolved accepts any JSON value."""
    try:
        return typing.get_type_hints(func, include_extras=True)
    except (NameError, TypeError):
        return {name: _resolve(p.annotation, func) for name, p in signature.parameters.items()}


def _resolve(annotation: Any, func: Callable[..., Any]) -> Any:
    if not isinstance(annotation, str):
        return annotation
    try:
        return eval(annotation, getattr(func, "__globals__", {}))  # a hint, as typing does
    except Exception:
        return Any


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _type_schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema of one annotation; unknown types accept any JSON value."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is inspect.Parameter.empty:
        return {}
    if tp is None or tp in _JSON:
        return {"type": _JSON[type(None) if tp is None else tp]}
    if origin is typing.Annotated:
        return _type_schema(args[0], defs)
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        variants = [_type_schema(arg, defs) for arg in args]
        return variants[0] if len(variants) == 1 else {"anyOf": variants}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [member.value for member in tp]}
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        schema = tp.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(schema.pop("$defs", {}))
        return schema
    if tp in (list, tuple, set, frozenset) or origin in (list, set, frozenset, Sequence):
        schema = {"type": "array"}
        if args:
            schema["items"] = _type_schema(args[0], defs)
        if tp in (set, frozenset) or origin in (set, frozenset):
            schema["uniqueItems"] = True
        return schema
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _type_schema(args[0], defs)}
        items = [_type_schema(arg, defs) for arg in args]
        size = len(items)
        return {"type": "array", "prefixItems": items, "minItems": size, "maxItems": size}
    if tp is dict or origin in (dict, Mapping):
        schema = {"type": "object"}
        if len(args) == 2:
            schema["additionalProperties"] = _type_schema(args[1], defs)
        return schema
    return {}
