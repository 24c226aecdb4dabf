"""What the client returns: plain frozen records built from API objects by pure functions.

`to_json()` gives the JSON item the CLI prints with `-o json` and the MCP server
returns, so every surface shows the same fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from kitaru.core.names import LABEL_FLOW, snapshot_name
from kitaru.core.phase import Phase

READY = "Ready"


@dataclass(frozen=True)
class Tag:
    tag: str
    exclusive: bool
    # A split tag's percent of its invocations that run this version (None: not split).
    weight: int | None = None


@dataclass(frozen=True)
class DeploymentInfo:
    """One deployment version of a flow."""

    flow: str
    version: int
    name: str
    snapshot_name: str
    entrypoint: str
    image: str | None
    runner_image: str | None
    tags: tuple[Tag, ...] = ()
    inputs: Mapping[str, Any] = field(default_factory=dict)
    input_schema: Mapping[str, Any] = field(default_factory=dict)
    source_config_map: str | None = None
    source_sha256: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    ready: bool | None = None
    created: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["inputs"] = dict(self.inputs)
        data["input_schema"] = dict(self.input_schema)
        data["tags"] = [asdict(t) for t in self.tags]
        return data


@dataclass(frozen=True)
class RouteInfo:
    """One tag of a flow and the versions it routes to (empty once removed)."""

    flow: str
    tag: str
    exclusive: bool
    versions: tuple[int, ...]
    ready: bool | None = None
    message: str | None = None
    # spec.expiresAt: when the operator removes the tag (None: never).
    expires_at: str | None = None
    # (version, percent) pairs of a split tag, in version order (empty: not split).
    split: tuple[tuple[int, int], ...] = ()
    # spec.shadow ({version, fraction}) and status.shadow (how its runs compare so far).
    shadow: Mapping[str, Any] | None = None
    shadow_summary: Mapping[str, Any] | None = None
    # Concurrency limits: runs through this tag; runs of the whole flow (default only).
    max_concurrency: int | None = None
    flow_max_concurrency: int | None = None

    @property
    def mode(self) -> str:
        if self.split:
            return "weighted"
        return "exclusive" if self.exclusive else "shared"

    def describe(self) -> str:
        """`v2 90%, v3 10%` for a split tag, `v2, v3` otherwise."""
        if self.split:
            return ", ".join(f"v{v} {w}%" for v, w in self.split)
        return ", ".join(f"v{v}" for v in self.versions)

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "versions": list(self.versions),
            "mode": self.mode,
            "split": [{"version": v, "weight": w} for v, w in self.split],
            "shadow": dict(self.shadow) if self.shadow else None,
            "shadow_summary": dict(self.shadow_summary) if self.shadow_summary else None,
        }


@dataclass(frozen=True)
class FlowSummary:
    """A flow as seen through its versions and routes."""

    flow: str
    versions: tuple[int, ...]
    default_version: int | None
    tags: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "versions": list(self.versions), "tags": list(self.tags)}


@dataclass(frozen=True)
class PruneSummary:
    """What `prune` deleted and why the rest stayed."""

    flow: str
    deleted: tuple[int, ...]
    kept_newest: tuple[int, ...]
    kept_tagged: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in asdict(self).items()
        }


@dataclass(frozen=True)
class ExecutionInfo:
    """One execution (a FlowInvocation) and its outcome so far."""

    exec_id: str
    flow: str
    status: str
    tag: str | None = None
    version: int | None = None
    resolved_version: int | None = None
    resolved_tag: str | None = None
    # Why a split tag gave it its version, e.g. "split 2=90,3=10: bucket 37 of 0-99 by
    # routing key" (None: not a split tag).
    routing: str | None = None
    routing_key: str | None = None
    # A shadow run: the execution it mirrors. A mirrored one: its shadow run's name.
    shadow_of: str | None = None
    shadow: str | None = None
    deployment: str | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict)
    result: Any = None
    reason: str | None = None
    message: str | None = None
    job_name: str | None = None
    created: str | None = None
    started: str | None = None
    finished_at: str | None = None
    # While queued under a concurrency limit: its place in line (1: next).
    queue_position: int | None = None
    idempotency_key: str | None = None

    @property
    def finished(self) -> bool:
        phase = PHASES.get(self.status)
        return phase is not None and phase.finished

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "inputs": dict(self.inputs)}


# Kitaru statuses: the FlowInvocation phases, lowercased.
PHASES = {phase.value.lower(): phase for phase in Phase}
STATUSES = tuple(PHASES)


def _ready(status: Mapping[str, Any]) -> tuple[bool | None, str | None]:
    """Ready's verdict (None before the operator has given one) and, unless True, its
    message."""
    # Imported here: pydantic stays off the path of `kitaru --help`.
    from kitaru.core.conditions import get_condition, is_true
    from kitaru.core.models import Condition

    conditions = [Condition.model_validate(c) for c in status.get("conditions") or []]
    ready = get_condition(conditions, READY)
    if ready is None:
        return None, None
    verdict = is_true(conditions, READY)
    return verdict, None if verdict else ready.message or None


def deployment_info(obj: Mapping[str, Any], tags: Iterable[Tag] | None = None) -> DeploymentInfo:
    """A record from a FlowDeployment object; `tags` from the routes when known, else status."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    snapshot = spec.get("snapshot") or {}
    source = snapshot.get("source") or {}
    git = snapshot.get("git") or {}
    if tags is None:
        tags = [
            Tag(t["tag"], bool(t.get("exclusive")), t.get("weight"))
            for t in status.get("tags") or []
        ]
    flow = spec.get("flow") or obj["metadata"].get("labels", {}).get(LABEL_FLOW, "")
    version = int(spec.get("version") or 0)
    return DeploymentInfo(
        flow=flow,
        version=version,
        name=obj["metadata"]["name"],
        snapshot_name=status.get("snapshotName") or snapshot_name(flow, version),
        entrypoint=snapshot.get("entrypoint", ""),
        image=snapshot.get("image"),
        runner_image=(spec.get("stack") or {}).get("runnerImage"),
        tags=tuple(tags),
        inputs=spec.get("inputs") or {},
        input_schema=spec.get("inputSchema") or {},
        source_config_map=source.get("configMap"),
        source_sha256=source.get("sha256"),
        git_commit=git.get("commit"),
        git_dirty=git.get("dirty") if git else None,
        ready=_ready(status)[0],
        created=obj["metadata"].get("creationTimestamp"),
    )


def route_info(obj: Mapping[str, Any]) -> RouteInfo:
    spec = obj.get("spec") or {}
    ready, message = _ready(obj.get("status") or {})
    return RouteInfo(
        flow=spec.get("flow", ""),
        tag=spec.get("tag", ""),
        exclusive=bool(spec.get("exclusive")),
        versions=tuple(sorted(spec.get("versions") or [])),
        ready=ready,
        message=message,
        expires_at=spec.get("expiresAt") or None,
        split=tuple(sorted((int(e["version"]), int(e["weight"])) for e in spec.get("split") or [])),
        shadow=spec.get("shadow"),
        shadow_summary=(obj.get("status") or {}).get("shadow"),
        max_concurrency=spec.get("maxConcurrency"),
        flow_max_concurrency=spec.get("flowMaxConcurrency"),
    )


def execution_info(obj: Mapping[str, Any]) -> ExecutionInfo:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    resolved = status.get("resolved") or {}
    phase = status.get("phase") or "Pending"
    return ExecutionInfo(
        exec_id=obj["metadata"]["name"],
        flow=spec.get("flow", ""),
        status=phase.lower(),
        tag=spec.get("tag"),
        version=spec.get("version"),
        resolved_version=resolved.get("version"),
        resolved_tag=resolved.get("tag"),
        routing=_split_reason(resolved.get("split")),
        routing_key=spec.get("routingKey"),
        shadow_of=spec.get("shadowOf"),
        shadow=(resolved.get("shadow") or {}).get("name"),
        deployment=resolved.get("deployment"),
        inputs=spec.get("inputs") or {},
        result=status.get("result"),
        reason=status.get("reason"),
        message=status.get("message"),
        job_name=status.get("jobName"),
        created=obj["metadata"].get("creationTimestamp"),
        started=status.get("startTime"),
        finished_at=status.get("completionTime"),
        queue_position=status.get("queuePosition"),
        idempotency_key=spec.get("idempotencyKey"),
    )


def _split_reason(choice: Mapping[str, Any] | None) -> str | None:
    if not choice:
        return None
    # Imported here: pydantic stays off the path of `kitaru --help`.
    from kitaru.core.models import SplitChoice
    from kitaru.core.routing import split_reason

    return split_reason(SplitChoice.model_validate(choice))
