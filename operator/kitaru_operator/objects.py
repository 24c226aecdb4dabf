"""Slim views of the API objects the informers read, decoded straight from JSON.

pydantic-core parses the response in Rust and builds Python objects only for the
fields declared here; everything else (managedFields, pod specs, results of finished
runs) is skipped without being materialised. At 100 000 finished runs that is the
difference between parsing their whole bodies and reading four fields of each.
"""

from __future__ import annotations

import json
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

# A FlowInvocation's inputs are whatever its creator sent, nested up to the API server's
# limit (kitaru.core.payloads.API_MAX_DEPTH). pydantic-core's parser stops at 200 levels
# and Python's json at the recursion limit: one deep object would fail every list of its
# kind in the namespace, so nothing there would be resolved again. `main` raises the
# recursion limit (kopf decodes with Python's json, then deep-copies each body) and
# `validate_json` falls back to Python's json where pydantic-core gives up. The rules then
# refuse such an object on its own.

T = TypeVar("T")


def _too_deep(error: ValidationError) -> bool:
    return any(
        e["type"] == "json_invalid" and "recursion limit" in str((e.get("ctx") or {}).get("error"))
        for e in error.errors(include_url=False, include_input=False)
    )


def validate_json(adapter: TypeAdapter[T], raw: bytes | str) -> T:
    """`adapter.validate_json(raw)`, through Python's json for a document nested deeper
    than pydantic-core parses (see above)."""
    try:
        return adapter.validate_json(raw)
    except ValidationError as error:
        if not _too_deep(error):
            raise
    return adapter.validate_python(json.loads(raw))


class Slim(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )


class OwnerReference(Slim):
    api_version: str = ""
    kind: str = ""
    name: str = ""
    uid: str = ""
    controller: bool = False


class Meta(Slim):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    owner_references: list[OwnerReference] = Field(default_factory=list)


class Resource(Slim):
    metadata: Meta = Field(default_factory=Meta)


class Object(Resource):
    """An object whose spec and status the operator reads as a whole."""

    spec: dict[str, Any] = Field(default_factory=dict)
    status: dict[str, Any] | None = None


class ManagedFieldsEntry(Slim):
    manager: str = ""
    operation: str = ""
    time: str = ""
    fields_v1: dict[str, Any] = Field(default_factory=dict, alias="fieldsV1")


class RouteMeta(Meta):
    managed_fields: list[ManagedFieldsEntry] = Field(default_factory=list)


class RouteObject(Object):
    """A FlowRoute, with who manages which fields: a route whose versions a GitOps
    controller applies (server-side apply) is the controller's to change."""

    metadata: RouteMeta = Field(default_factory=RouteMeta)


class Observed(Resource):
    """An object the operator only observes (Jobs, pods): no spec."""

    status: dict[str, Any] = Field(default_factory=dict)


class _JobSpec(Slim):
    managed_by: str | None = None
    backoff_limit: int = 6
    active_deadline_seconds: int | None = None


class JobObject(Resource):
    """A Job: how it is run (by whom, retries, deadline) and its status; no template."""

    spec: _JobSpec = Field(default_factory=_JobSpec)
    status: dict[str, Any] = Field(default_factory=dict)


class _FinishedSpec(Slim):
    flow: str = ""
    ttl_seconds_after_finished: int | None = None
    history_limit: int | None = None
    shadow_of: str | None = None


class _ShadowRef(Slim):
    name: str = ""


class _Resolved(Slim):
    version: int | None = None
    tag: str | None = None
    shadow: _ShadowRef | None = None


class _FinishedStatus(Slim):
    phase: str | None = None
    completion_time: str | None = None
    result: Any = None
    resolved: _Resolved | None = None


class FinishedInvocation(Resource):
    """What retention, the shadow tally and promotions need of a finished FlowInvocation
    (the result is read to be hashed, then dropped with the rest)."""

    spec: _FinishedSpec = Field(default_factory=_FinishedSpec)
    status: _FinishedStatus = Field(default_factory=_FinishedStatus)


class _RunStatus(Slim):
    phase: str | None = None
    completion_time: str | None = None


class ScheduledInvocation(Resource):
    """What a schedule needs of one of its runs: its phase and finish time."""

    status: _RunStatus = Field(default_factory=_RunStatus)


Item = TypeVar("Item", bound=Resource)


class ListMeta(Slim):
    resource_version: str = ""
    continue_: str = Field("", alias="continue")


class ObjectList(Slim, Generic[Item]):
    metadata: ListMeta = Field(default_factory=ListMeta)
    items: list[Item] = Field(default_factory=list)


class WatchEvent(Slim, Generic[Item]):
    type: str
    object: Item
