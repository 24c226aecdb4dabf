"""Flow inputs: merge, JSON Schema validation, hashing, and schemas from signatures."""

from __future__ import annotations

import hashlib
import inspect
import json
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from jsonschema.exceptions import ValidationError, best_match
from pydantic import ConfigDict, Field, PydanticUserError, create_model
from pydantic.json_schema import (
    GenerateJsonSchema,
    JsonSchemaMode,
    JsonSchemaValue,
    JsonSchemaWarningKind,
)
from pydantic_core import CoreSchema

from kitaru.core import schema_bounds
from kitaru.core.payloads import KIB, json_problem, too_large

if TYPE_CHECKING:
    from pydantic.json_schema import CoreSchemaOrField

# The run gets its inputs and input schema as environment variables (KITARU_INPUTS,
# KITARU_INPUT_SCHEMA), each at most 128 KiB on Linux; the schema carries the deploy-time
# inputs as defaults. Inputs are parameters: large data goes by reference.
MAX_INPUTS_BYTES = 64 * KIB
MAX_SCHEMA_BYTES = schema_bounds.MAX_SCHEMA_BYTES


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
    # The size first, by the C encoder: a 1.5 MB object is refused without a walk of
    # its items in Python (the operator does this on its event loop). What the encoder
    # cannot take (a non-JSON value, nesting past the recursion limit) json_problem names.
    try:
        size: int | None = len(canonical_json(inputs).encode())
    except (TypeError, ValueError, RecursionError):
        size = None
    if size is not None and size > MAX_INPUTS_BYTES:
        raise InvalidInputs(
            too_large("inputs are", size, MAX_INPUTS_BYTES)
            + ": pass large data by reference (a URL or an object-store key)"
        )
    problem = json_problem(inputs)
    if problem:
        raise InvalidInputs(f"invalid inputs: {problem}")


def check_input_schema(schema: Mapping[str, Any]) -> None:
    """Raise InvalidInputs unless every value can be checked against `schema` with bounded
    work (`schema_bounds`): a deploy refuses such a schema before anything is created."""
    _checked_schema_json(schema)


def _checked_schema_json(schema: Mapping[str, Any]) -> str:
    schema_json = canonical_json(schema)
    size = len(schema_json.encode())
    if size > MAX_SCHEMA_BYTES:
        raise InvalidInputs(too_large("the deployment's input schema is", size, MAX_SCHEMA_BYTES))
    try:
        schema_bounds.validator_for(schema_json)
    except schema_bounds.UnsafeSchema as exc:
        raise InvalidInputs(f"the deployment's input schema is invalid: {exc}") from exc
    return schema_json


def validate_inputs(inputs: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Raise InvalidInputs naming every offending field and its problem (after
    `check_inputs`: plain JSON, shallow and small enough to run). The check's work is
    bounded whatever the schema (`schema_bounds`); a schema that cannot be checked so is
    an error of the deployment, named as such."""
    check_inputs(inputs)
    schema_json = _checked_schema_json(schema)
    try:
        errors = schema_bounds.schema_errors(schema_json, dict(inputs))
    except schema_bounds.SchemaTooComplex as exc:
        raise InvalidInputs(
            f"the deployment's input schema cannot check these inputs: {exc}"
        ) from exc
    if errors:
        errors.sort(key=lambda e: list(map(str, e.path)))
        described = "; ".join(_describe(e) for e in errors)
        more = "" if len(errors) < schema_bounds.MAX_REPORTED_ERRORS else "; and maybe more"
        raise InvalidInputs("invalid inputs: " + described + more)


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
    message = schema_bounds.cut(error.message)
    return f"input '{field}': {message}" if field else message


# --- schema from a flow signature ---------------------------------------------------


class _FlowInputsJsonSchema(GenerateJsonSchema):
    """pydantic's JSON Schema generator, as a flow's inputs need it: the 2020-12 dialect
    named; a default that is not JSON left out quietly; a type pydantic cannot describe
    (an arbitrary class, a callable) accepts any JSON value, as an unresolvable hint does."""

    ignored_warning_kinds: set[JsonSchemaWarningKind] = {
        "skipped-choice",
        "non-serializable-default",
    }

    def generate(self, schema: CoreSchema, mode: JsonSchemaMode = "validation") -> JsonSchemaValue:
        json_schema = super().generate(schema, mode=mode)
        return {"$schema": self.schema_dialect, **json_schema}

    def handle_invalid_for_json_schema(
        self, schema: CoreSchemaOrField, error_info: str
    ) -> JsonSchemaValue:
        return {}


# The model of a flow's inputs: a parameter's type may be any class (a run gets JSON);
# pydantic describes what it can and `_FlowInputsJsonSchema` lets the rest be any value.
_INPUTS_CONFIG = ConfigDict(arbitrary_types_allowed=True)


def schema_from_signature(func: Callable[..., Any], deploy_inputs: Mapping[str, Any]) -> dict:
    """JSON Schema of a flow's keyword inputs, built by pydantic from its type hints.

    Deploy-time values and Python defaults become `default`; a parameter with
    neither is required. Unknown inputs are rejected unless the flow takes **kwargs.
    """
    signature = inspect.signature(func)
    hints = _type_hints(func, signature)
    fields: dict[str, Any] = {}
    open_ended = False
    for param in signature.parameters.values():
        if param.kind is param.VAR_KEYWORD:
            open_ended = True
        elif param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            default = deploy_inputs.get(param.name, param.default)
            field = Field(... if default is param.empty else default, alias=param.name)
            # Field names of our own: a parameter may be called `json` or `model_config`.
            fields[f"p{len(fields)}"] = (_describable(hints.get(param.name, Any)), field)
    names = [field.alias for _, field in fields.values()]
    unknown = sorted(set(deploy_inputs) - set(names))
    if unknown and not open_ended:
        raise InvalidInputs(
            f"unknown input {', '.join(repr(u) for u in unknown)} for flow "
            f"'{func.__name__}' (expected: {', '.join(names) or 'none'})"
        )

    def inputs_object(schema: dict[str, Any]) -> None:
        # No generated titles (`Topic` for `topic`): the names say it, and the schema
        # travels in an environment variable. Unknown inputs only into **kwargs.
        schema.pop("title", None)
        for prop in schema["properties"].values():
            prop.pop("title", None)
        schema["additionalProperties"] = open_ended

    config: ConfigDict = {**_INPUTS_CONFIG, "json_schema_extra": inputs_object}
    model = create_model("FlowInputs", __config__=config, **fields)
    return model.model_json_schema(schema_generator=_FlowInputsJsonSchema)


def _describable(hint: Any) -> Any:
    """`hint` when pydantic can describe it, else Any: a model that is not fully defined,
    or `typing.TypedDict` before Python 3.12, which pydantic refuses."""
    probe = create_model("Probe", __config__=_INPUTS_CONFIG, value=(hint, ...))
    try:
        probe.model_json_schema(schema_generator=_FlowInputsJsonSchema)
    except PydanticUserError:
        return Any
    return hint


def _type_hints(func: Callable[..., Any], signature: inspect.Signature) -> dict[str, Any]:
    """Resolved annotations; one that cannot be resolved accepts any JSON value."""
    try:
        return typing.get_type_hints(func, include_extras=True)
    except (NameError, TypeError):
        return {name: _resolve(p.annotation, func) for name, p in signature.parameters.items()}


def _resolve(annotation: Any, func: Callable[..., Any]) -> Any:
    if annotation is inspect.Parameter.empty:
        return Any
    if not isinstance(annotation, str):
        return annotation
    try:
        return eval(annotation, getattr(func, "__globals__", {}))  # a hint, as typing does
    except Exception:
        return Any
