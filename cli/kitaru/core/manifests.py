"""Builders: the API objects every surface writes, as plain dicts (pure, no I/O).

The client, the operator, the tests and the benchmarks build FlowDeployments,
FlowRoutes, FlowInvocations and the objects beside them here, and nowhere else.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from kitaru.core.idempotency import idempotent_name, validate_idempotency_key
from kitaru.core.models import (
    FlowDeploymentSpec,
    FlowInvocationSpec,
    GitInfo,
    Snapshot,
    SourceSnapshot,
    Stack,
)
from kitaru.core.names import (
    ANNOTATION_CREATED_BY,
    ANNOTATION_HIGHEST_VERSION,
    GROUP_VERSION,
    LABEL_FLOW,
    LABEL_SOURCE,
    LABEL_TAG,
    LABEL_VERSION,
    deployment_name,
    flow_dns,
    route_name,
)
from kitaru.core.retention import Retention
from kitaru.core.routing import RouteView, split_of
from kitaru.core.sources import config_map_payload
from kitaru.core.tokens import CLIENT_RULES


def source_config_map_name(flow: str, sha256: str) -> str:
    """Content-addressed, so the same source is stored once and never changes."""
    return f"{flow_dns(flow)}-src-{sha256[:12]}"


def build_source_config_map(flow: str, files: Mapping[str, bytes], sha256: str) -> dict[str, Any]:
    """An immutable ConfigMap holding the flow's source files and their manifest
    (`kitaru.core.sources`: text in `data`, other files in `binaryData`)."""
    data, binary = config_map_payload(files)
    config_map: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": source_config_map_name(flow, sha256),
            "labels": {LABEL_FLOW: flow, LABEL_SOURCE: sha256[:12]},
            "annotations": {"kitaru.dev/source-sha256": sha256},
        },
        "immutable": True,
        "data": data,
    }
    if binary:
        config_map["binaryData"] = binary
    return config_map


def build_deployment(
    flow: str,
    version: int,
    *,
    entrypoint: str,
    image: str | None = None,
    runner_image: str | None = None,
    inputs: Mapping[str, Any] | None = None,
    input_schema: Mapping[str, Any] | None = None,
    source: SourceSnapshot | None = None,
    git: GitInfo | None = None,
    retention: Retention | None = None,
    service_account_name: str | None = None,
    backoff_limit: int = 0,
) -> dict[str, Any]:
    """A FlowDeployment `<flow-dns>-v<N>`: the immutable version N of `flow`. Its stack:
    `retention` is how long its finished runs are kept, `service_account_name` the
    ServiceAccount its pods run as, `backoff_limit` the retries of a failed run."""
    retention = retention or Retention()
    spec = FlowDeploymentSpec(
        flow=flow,
        version=version,
        snapshot=Snapshot(image=image, entrypoint=entrypoint, source=source, git=git),
        inputs=dict(inputs or {}),
        input_schema=dict(input_schema or {}),
        stack=Stack.model_validate(
            {
                "runnerImage": runner_image,
                "ttlSecondsAfterFinished": retention.ttl_seconds,
                "historyLimit": retention.history_limit,
                "serviceAccountName": service_account_name,
                "backoffLimit": backoff_limit,
            }
        ),
    )
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "FlowDeployment",
        "metadata": {
            "name": deployment_name(flow, version),
            "labels": {LABEL_FLOW: flow, LABEL_VERSION: str(version)},
        },
        "spec": spec.wire(),
    }


def route_view(obj: Mapping[str, Any] | None) -> RouteView | None:
    """The routing part of a FlowRoute object (None for a missing route)."""
    if obj is None:
        return None
    spec = obj.get("spec") or {}
    return RouteView(
        flow=spec["flow"],
        tag=spec["tag"],
        exclusive=bool(spec.get("exclusive")),
        versions=frozenset(int(v) for v in spec.get("versions") or []),
        split=split_of(spec.get("split")),
    )


# FlowRoute spec fields that are not routing: a tag move keeps them.
LIMIT_FIELDS = ("maxConcurrency", "flowMaxConcurrency")


def kept_fields(spec: Mapping[str, Any], view: RouteView) -> dict[str, Any]:
    """What a tag write keeps of a route's spec besides routing: its concurrency limits
    (`kitaru flow limit`) and its shadow (`kitaru flow shadow`) unless the tag now routes
    to the shadow's candidate (it was promoted)."""
    kept = {k: spec[k] for k in LIMIT_FIELDS if spec.get(k) is not None}
    shadow = spec.get("shadow")
    if shadow and shadow.get("version") not in view.versions:
        kept["shadow"] = shadow
    return kept


def build_route(
    view: RouteView,
    current: Mapping[str, Any] | None = None,
    *,
    high_water_mark: int | None = None,
) -> dict[str, Any]:
    """The FlowRoute for `view`; from `current` it keeps metadata (resourceVersion: CAS)
    and the fields set apart from routing (`kept_fields`).
    A new `default` route may carry the flow's high-water mark from the start."""
    spec = view.to_spec().wire()
    if current is not None:
        body = copy.deepcopy(dict(current))
        body["spec"] = spec | kept_fields(current.get("spec") or {}, view)
        body.pop("status", None)
        return body
    metadata: dict[str, Any] = {
        "name": route_name(view.flow, view.tag),
        "labels": {LABEL_FLOW: view.flow, LABEL_TAG: view.tag},
    }
    if high_water_mark is not None:
        metadata["annotations"] = {ANNOTATION_HIGHEST_VERSION: str(high_water_mark)}
    return {"apiVersion": GROUP_VERSION, "kind": "FlowRoute", "metadata": metadata, "spec": spec}


def build_invocation(
    flow: str,
    *,
    tag: str | None = None,
    version: int | None = None,
    inputs: Mapping[str, Any] | None = None,
    retention: Retention | None = None,
    name: str | None = None,
    active_deadline_seconds: int | None = None,
    backoff_limit: int | None = None,
    resolve_deadline_seconds: int | None = None,
    routing_key: str | None = None,
    idempotency_key: str | None = None,
    created_by: str | None = None,
) -> dict[str, Any]:
    """A FlowInvocation named `name` (default: the one `idempotency_key` derives, else a
    generated `<flow-dns>-xxxxx`), signed `created_by` (the caller as the API server
    names it; admission refuses anyone else's name) so that its creator may cancel it.

    Each option left unset is its version's stack's, else the operator's: `retention`,
    how long it is kept once finished; `active_deadline_seconds` and `backoff_limit`, the
    deadline and retries of its run; `resolve_deadline_seconds` (the operator's only),
    how long resolution waits for what it names to appear.
    """
    retention = retention or Retention()
    if idempotency_key is not None:
        validate_idempotency_key(idempotency_key)
    spec = FlowInvocationSpec.model_validate(
        {
            "flow": flow,
            "tag": tag,
            "version": version,
            "inputs": dict(inputs or {}),
            "ttlSecondsAfterFinished": retention.ttl_seconds,
            "historyLimit": retention.history_limit,
            "activeDeadlineSeconds": active_deadline_seconds,
            "backoffLimit": backoff_limit,
            "resolveDeadlineSeconds": resolve_deadline_seconds,
            "routingKey": routing_key,
            "idempotencyKey": idempotency_key,
        }
    )
    if name is None and idempotency_key is not None:
        name = idempotent_name(flow, idempotency_key)
    metadata: dict[str, Any] = (
        {"name": name} if name is not None else {"generateName": f"{flow_dns(flow)}-"}
    )
    metadata["labels"] = {LABEL_FLOW: flow}
    if created_by:
        metadata["annotations"] = {ANNOTATION_CREATED_BY: created_by}
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "FlowInvocation",
        "metadata": metadata,
        "spec": {k: v for k, v in spec.wire().items() if k != "cancelRequested"},
    }


def build_client_identity(name: str) -> list[dict[str, Any]]:
    """The project's client identity for scripts (`kitaru auth token`, the printed curl):
    a ServiceAccount allowed to invoke and follow runs and to read versions and routes —
    nothing else (no deploying, tagging, cancelling or deleting; no minting of tokens)."""
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name},
            "rules": [rule.wire() for rule in CLIENT_RULES],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name}],
        },
    ]
