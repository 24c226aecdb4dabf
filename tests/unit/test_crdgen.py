"""The generated CRDs are structural, described, and carry every CEL rule."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kitaru.core import crdgen
from kitaru.core.names import ANNOTATION_DELETING_FLOW, ANNOTATION_HIGHEST_VERSION
from pydantic import BaseModel, Field


def _schema(kind: crdgen.Kind) -> dict[str, Any]:
    return crdgen.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            if key not in ("default", "enum", crdgen.models.CEL):
                yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}/{i}")


KINDS = pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda k: k.kind)


@KINDS
@pytest.mark.parametrize("forbidden", ["$ref", "$defs", "anyOf", "oneOf", "allOf", "title"])
def test_schema_is_structural(kind: crdgen.Kind, forbidden: str) -> None:
    offending = [path for path, node in _walk(_schema(kind)) if forbidden in node]
    assert offending == []


@KINDS
def test_no_null_defaults(kind: crdgen.Kind) -> None:
    nulls = [p for p, n in _walk(_schema(kind)) if "default" in n and n["default"] is None]
    assert nulls == []


@KINDS
def test_every_field_has_a_description(kind: crdgen.Kind) -> None:
    assert crdgen.missing_descriptions(_schema(kind)) == []


@KINDS
def test_names_and_versions(kind: crdgen.Kind) -> None:
    spec = crdgen.crd(kind)["spec"]
    assert spec["group"] == "kitaru.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["categories"] == ["kitaru"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize(
    ("kind", "short", "columns"),
    [
        (crdgen.DEPLOYMENT, "fdep", ["Flow", "Version", "Tags", "Ready", "Age"]),
        (crdgen.ROUTE, "froute", ["Flow", "Tag", "Mode", "Versions", "Split", "Ready"]),
        (crdgen.INVOCATION, "finv", ["Flow", "Version", "Phase", "Age"]),
    ],
)
def test_short_names_and_printer_columns(kind: crdgen.Kind, short: str, columns: list[str]) -> None:
    spec = crdgen.crd(kind)["spec"]
    assert spec["names"]["shortNames"] == [short]
    printed = [
        c["name"] for c in spec["versions"][0]["additionalPrinterColumns"] if not c.get("priority")
    ]
    assert printed == columns


def test_optional_fields_are_nullable_with_their_type() -> None:
    spec = _schema(crdgen.INVOCATION)["properties"]["spec"]["properties"]
    assert spec["tag"]["type"] == "string"
    assert spec["tag"]["nullable"] is True
    assert spec["tag"]["pattern"].startswith("^[a-z0-9]")
    assert spec["version"] == {
        "type": "integer",
        "description": "Exact version to invoke.",
        "nullable": True,
        "minimum": 1,
    }


def test_real_defaults_are_kept() -> None:
    spec = _schema(crdgen.INVOCATION)["properties"]["spec"]["properties"]
    assert spec["cancelRequested"]["default"] is False
    assert spec["inputs"]["default"] == {}
    route = _schema(crdgen.ROUTE)["properties"]["spec"]["properties"]
    assert route["exclusive"]["default"] is False


def test_any_result_is_untyped_and_preserved() -> None:
    result = _schema(crdgen.INVOCATION)["properties"]["status"]["properties"]["result"]
    assert result == {
        "description": "The flow's JSON result on success.",
        "x-kubernetes-preserve-unknown-fields": True,
    }


def test_free_form_inputs_are_preserved_objects() -> None:
    inputs = _schema(crdgen.DEPLOYMENT)["properties"]["spec"]["properties"]["inputs"]
    assert inputs["type"] == "object"
    assert inputs["x-kubernetes-preserve-unknown-fields"] is True
    assert "additionalProperties" not in inputs


def test_enums_are_string_enums() -> None:
    status = _schema(crdgen.INVOCATION)["properties"]["status"]["properties"]
    assert status["phase"]["type"] == "string"
    assert status["phase"]["enum"] == [
        "Queued",
        "Pending",
        "Running",
        "Completed",
        "Failed",
        "Cancelled",
    ]
    condition = status["conditions"]["items"]["properties"]["status"]
    assert condition["enum"] == ["True", "False", "Unknown"]


def test_nested_models_are_inlined_with_docstring_descriptions() -> None:
    snapshot = _schema(crdgen.DEPLOYMENT)["properties"]["spec"]["properties"]["snapshot"]
    assert snapshot["type"] == "object"
    assert snapshot["required"] == ["entrypoint"]
    source = snapshot["properties"]["source"]
    assert source["nullable"] is True
    assert source["properties"]["sha256"]["pattern"] == "^[0-9a-f]{64}$"


def test_map_of_strings() -> None:
    stack = _schema(crdgen.DEPLOYMENT)["properties"]["spec"]["properties"]["stack"]
    requests = stack["properties"]["resources"]["properties"]["requests"]
    assert requests["additionalProperties"] == {"type": "string"}


def test_route_versions_are_an_integer_set() -> None:
    versions = _schema(crdgen.ROUTE)["properties"]["spec"]["properties"]["versions"]
    assert versions["x-kubernetes-list-type"] == "set"
    assert versions["items"] == {"type": "integer", "minimum": 1}
    assert versions["minItems"] == 1


def _rules(node: dict[str, Any]) -> list[str]:
    return [r["rule"] for r in node.get(crdgen.models.CEL, [])]


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        (
            crdgen.DEPLOYMENT,
            "self.metadata.name.startsWith(self.spec.flow.replace('_', '-') + '-v')",
        ),
        (crdgen.DEPLOYMENT, "== self.spec.version"),
        (crdgen.ROUTE, "self.metadata.name == self.spec.flow.replace('_', '-') + '.'"),
        (crdgen.INVOCATION, "size(self.metadata.name) <= 63"),
    ],
)
def test_root_name_rules(kind: crdgen.Kind, fragment: str) -> None:
    schema = _schema(kind)
    assert any(fragment in rule for rule in _rules(schema))
    assert schema["required"] == ["spec"]


def test_same_object_rules_are_carried() -> None:
    deployment = _schema(crdgen.DEPLOYMENT)["properties"]["spec"]
    assert "self == oldSelf" in _rules(deployment)
    assert any("runnerImage" in rule for rule in _rules(deployment))
    route = _schema(crdgen.ROUTE)["properties"]["spec"]
    # default exclusive, one exclusive version, no expiry, flow limit on default only;
    # split: not default, not exclusive, its versions, weights adding up to 100; a shadow
    # off the route's versions
    assert len(_rules(route)) == 9
    assert _rules(route["properties"]["flow"]) == ["self == oldSelf"]
    assert _rules(route["properties"]["tag"]) == ["self == oldSelf"]
    invocation = _schema(crdgen.INVOCATION)["properties"]["spec"]
    assert len(_rules(invocation)) == 3
    env = deployment["properties"]["stack"]["properties"]["env"]["items"]
    assert _rules(env) and "filter" in _rules(env)[0]


class _Union(BaseModel):
    value: int | str = Field(description="Either.")


class _Untyped(BaseModel):
    value: dict[str, Any] = Field(description="Free form.")


def test_real_unions_are_refused() -> None:
    with pytest.raises(crdgen.SchemaError, match="value"):
        crdgen.structural(_Union.model_json_schema(by_alias=True))


def test_free_form_dicts_keep_their_fields() -> None:
    schema = crdgen.structural(_Untyped.model_json_schema(by_alias=True))
    assert schema["properties"]["value"]["x-kubernetes-preserve-unknown-fields"] is True


def test_missing_descriptions_are_found() -> None:
    item = {"properties": {"c": {"type": "integer"}}}
    schema = {"properties": {"a": {"type": "string"}, "b": {"description": "x", "items": item}}}
    assert crdgen.missing_descriptions(schema) == [".a", ".b[].c"]


# --- admission ---------------------------------------------------------------------


def _policies() -> dict[str, dict[str, Any]]:
    docs = crdgen.admission_policies()
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"}


def test_every_policy_has_a_binding() -> None:
    docs = crdgen.admission_policies()
    bindings = {
        d["spec"]["policyName"] for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"
    }
    assert bindings == set(_policies())


@pytest.mark.parametrize(
    ("name", "resource", "operation", "params"),
    [
        ("kitaru-protect-exclusive-versions", "flowdeployments", "DELETE", True),
        ("kitaru-protect-default-route", "flowroutes", "DELETE", False),
        ("kitaru-never-reuse-versions", "flowdeployments", "CREATE", True),
    ],
)
def test_policy_shape(name: str, resource: str, operation: str, params: bool) -> None:
    spec = _policies()[name]["spec"]
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert (rule["resources"], rule["operations"]) == ([resource], [operation])
    assert ("paramKind" in spec) is params
    if params:
        assert spec["paramKind"] == {"apiVersion": "kitaru.dev/v1alpha1", "kind": "FlowRoute"}
    for validation in spec["validations"]:
        assert validation["expression"].startswith(
            "has(namespaceObject.metadata.deletionTimestamp) ||"
        )
        assert "messageExpression" in validation


def test_param_bindings_select_same_namespace_routes_and_allow_none() -> None:
    for doc in crdgen.admission_policies():
        ref = doc["spec"].get("paramRef")
        if ref is not None:
            assert ref == {"selector": {}, "parameterNotFoundAction": "Allow"}


def test_policies_use_the_wire_annotations() -> None:
    text = yaml.safe_dump_all(crdgen.admission_policies())
    assert ANNOTATION_DELETING_FLOW in text
    assert ANNOTATION_HIGHEST_VERSION in text
    assert "kitaru flow tag" in text


def test_rendered_files_parse_back() -> None:
    for name, text in crdgen.render().items():
        assert text.startswith(crdgen.HEADER)
        docs = [d for d in yaml.safe_load_all(text) if d]
        assert docs, name
