"""The custom resources as pydantic models: the single source of truth.

`kitaru.core.crdgen` turns these into the CRD YAML in `crds/`; the operator,
client, CLI, SDK and MCP server parse and build objects with them. Field names
are snake_case in Python and camelCase on the wire (`by_alias=True`).

Same-object rules live here as CEL (`x-kubernetes-validations`) so the API
server enforces them for every client, kubectl included.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from kitaru.core.names import (
    DEFAULT_TAG,
    FLOW_MAX_LENGTH,
    FLOW_PATTERN,
    PROMOTION_DEFAULT_MIN_RUNS,
    PROMOTION_DEFAULT_MIN_SUCCESS,
    PROMOTION_MAX_AFTER_SECONDS,
    TAG_MAX_LENGTH,
    TAG_PATTERN,
)
from kitaru.core.phase import Phase

__all__ = ["Phase"]  # re-exported: the status models' field type

CEL = "x-kubernetes-validations"
PRESERVE = "x-kubernetes-preserve-unknown-fields"


class Model(BaseModel):
    """Base: camelCase on the wire, unknown fields kept out of our objects."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def wire(self) -> dict[str, Any]:
        """The JSON-ready dict the API server expects (camelCase, no Nones)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _immutable(what: str) -> dict[str, Any]:
    return {CEL: [{"rule": "self == oldSelf", "message": f"{what} is immutable"}]}


def _flow_field(
    description: str = "Public flow name (a lowercase Python identifier).",
    *,
    immutable: bool = False,
) -> Any:
    return Field(
        pattern=FLOW_PATTERN,
        max_length=FLOW_MAX_LENGTH,
        description=description,
        json_schema_extra=_immutable("flow") if immutable else None,
    )


def _tag_field(description: str, default: Any = ..., *, immutable: bool = False) -> Any:
    return Field(
        default,
        pattern=TAG_PATTERN,
        max_length=TAG_MAX_LENGTH,
        description=description,
        json_schema_extra=_immutable("tag") if immutable else None,
    )


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Model):
    """A Kubernetes-style condition (metav1.Condition shape)."""

    type: str = Field(description="Condition type, e.g. Ready, Resolved, Succeeded.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase machine-readable reason for the last transition.")
    message: str = Field("", description="Human-readable detail.")
    last_transition_time: str | None = Field(
        None, description="When the status last changed (RFC 3339)."
    )
    observed_generation: int | None = Field(
        None, description="The metadata.generation this condition was computed from."
    )


# --- FlowDeployment -----------------------------------------------------------


class SourceSnapshot(Model):
    """The flow's source files, frozen in an immutable ConfigMap."""

    config_map: str = Field(
        description="Name of the immutable ConfigMap (same namespace) holding the source files."
    )
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 over the source files (sorted by name); the runner checks it.",
    )
    files: list[str] = Field(
        default_factory=list,
        description="Relative paths of the files in the ConfigMap, in the order hashed.",
    )


class GitInfo(Model):
    """Where the source came from, recorded at deploy time."""

    commit: str | None = Field(None, description="Git commit of the working tree at deploy time.")
    dirty: bool = Field(False, description="True when the working tree had uncommitted changes.")


class Snapshot(Model):
    """What runs: an image plus a flow entrypoint, optionally with frozen source files."""

    image: str | None = Field(
        None,
        description=(
            "Container image that runs the flow, preferably pinned by digest. "
            "Empty means the stack's runnerImage."
        ),
    )
    entrypoint: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$",
        description="module:function of the flow, importable in the image or from the source.",
    )
    source: SourceSnapshot | None = Field(
        None, description="Frozen source files mounted into the run (deploy from source)."
    )
    git: GitInfo | None = Field(None, description="Git provenance of the source.")


class KeyRef(Model):
    """A key of a ConfigMap or Secret in the same namespace."""

    name: str = Field(description="ConfigMap or Secret name.")
    key: str = Field(description="Key inside it.")


class EnvVar(Model):
    """One environment variable of the run: a literal or a reference."""

    model_config = ConfigDict(
        json_schema_extra={
            CEL: [
                {
                    "rule": "[has(self.value), has(self.secretKeyRef), "
                    "has(self.configMapKeyRef)].filter(x, x).size() <= 1",
                    "message": "set at most one of value, secretKeyRef, configMapKeyRef",
                }
            ]
        }
    )

    name: str = Field(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", description="Variable name.")
    value: str | None = Field(None, description="Literal value.")
    secret_key_ref: KeyRef | None = Field(None, description="Take the value from a Secret key.")
    config_map_key_ref: KeyRef | None = Field(
        None, description="Take the value from a ConfigMap key."
    )


class EnvFrom(Model):
    """Import every key of a ConfigMap or Secret as environment variables."""

    config_map: str | None = Field(None, description="ConfigMap name.")
    secret: str | None = Field(None, description="Secret name.")


class Resources(Model):
    """Compute resources of the run's container."""

    requests: dict[str, str] = Field(
        default_factory=dict, description="Requested resources, e.g. cpu: 250m, memory: 256Mi."
    )
    limits: dict[str, str] = Field(default_factory=dict, description="Resource limits.")


class Stack(Model):
    """The execution context captured at deploy time; every invocation runs with it."""

    runner_image: str | None = Field(
        None, description="Default runner image used when the snapshot names no image."
    )
    service_account_name: str | None = Field(None, description="ServiceAccount the run's pod uses.")
    resources: Resources | None = Field(None, description="Requests and limits of the run.")
    # Bounded so the API server can estimate the cost of the CEL rule on each item.
    env: list[EnvVar] = Field(
        default_factory=list, max_length=256, description="Environment of the run."
    )
    env_from: list[EnvFrom] = Field(
        default_factory=list,
        max_length=64,
        description="ConfigMaps and Secrets imported as environment.",
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Default deadline of one invocation, in seconds."
    )
    backoff_limit: int = Field(
        0, ge=0, le=20, description="Default number of retries after a failed attempt."
    )
    ttl_seconds_after_finished: int | None = Field(
        None,
        ge=0,
        description="Time a finished run of this version is kept, in seconds "
        "(default: the operator's, a week).",
    )
    history_limit: int | None = Field(
        None,
        ge=0,
        description="A finished run of this version is deleted once this many newer finished "
        "runs of the flow exist (default: the operator's, 1000).",
    )


class FlowDeploymentSpec(Model):
    """One immutable deployment version of a flow."""

    model_config = ConfigDict(
        json_schema_extra={
            CEL: [
                {"rule": "self == oldSelf", "message": "a deployment version is immutable"},
                {
                    # DESIGN §3 remote-executable guard: same-object, so CEL, not admission.
                    "rule": "(has(self.snapshot.image) && self.snapshot.image != '') || "
                    "(has(self.stack) && has(self.stack.runnerImage) "
                    "&& self.stack.runnerImage != '')",
                    "message": "this deployment has no runnable snapshot: set spec.snapshot.image "
                    "(kitaru deploy --image IMAGE) or spec.stack.runnerImage",
                },
            ]
        }
    )

    flow: str = _flow_field()
    version: int = Field(ge=1, description="Version number, assigned per flow, never reused.")
    snapshot: Snapshot = Field(description="The saved snapshot this version runs.")
    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description="Representative deploy-time input values; invocations override them by key.",
        json_schema_extra={PRESERVE: True},
    )
    input_schema: dict[str, Any] = Field(
        default_factory=dict,
        description="JSON Schema of the flow's inputs (deploy-time values as defaults).",
        json_schema_extra={PRESERVE: True},
    )
    stack: Stack = Field(
        # model_validate: mypy without the pydantic plugin cannot see Stack's defaults.
        default_factory=lambda: Stack.model_validate({}),
        description="Execution context of every run.",
    )


class TagRef(Model):
    """A tag routed to a version."""

    tag: str = Field(description="Tag name.")
    exclusive: bool = Field(description="True if the tag routes only to this version.")


class FlowDeploymentStatus(Model):
    """Observed state of a deployment version, written by the operator."""

    conditions: list[Condition] = Field(default_factory=list, description="Ready.")
    tags: list[TagRef] = Field(
        default_factory=list, description="Tags routed to this version (derived from FlowRoutes)."
    )
    tag_summary: str = Field("", description="Tags as one comma-separated string, for printing.")
    snapshot_name: str | None = Field(
        None, description="Kitaru snapshot name kitaru::<flow>::v<N>."
    )
    observed_generation: int | None = Field(None, description="Generation last reconciled.")


# --- FlowRoute ----------------------------------------------------------------


class FlowRouteSpec(Model):
    """A tag of a flow and the version(s) it routes to."""

    model_config = ConfigDict(
        json_schema_extra={
            CEL: [
                {
                    "rule": f"self.tag != '{DEFAULT_TAG}' || self.exclusive",
                    "message": f"the '{DEFAULT_TAG}' tag is always exclusive",
                },
                {
                    "rule": "!self.exclusive || size(self.versions) == 1",
                    "message": "an exclusive tag routes to exactly one version",
                },
                {
                    "rule": f"self.tag != '{DEFAULT_TAG}' || !has(self.expiresAt)",
                    "message": f"the '{DEFAULT_TAG}' tag cannot expire: remove expiresAt",
                },
            ]
        }
    )

    flow: str = _flow_field(
        "Public flow name (a lowercase Python identifier); immutable.", immutable=True
    )
    tag: str = _tag_field("Tag name; immutable.", immutable=True)
    exclusive: bool = Field(
        False, description="Exclusive tags route to one version; shared tags to a set."
    )
    versions: list[Annotated[int, Field(ge=1)]] = Field(
        min_length=1,
        description="Versions this tag routes to (a set).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    expires_at: datetime | None = Field(
        None,
        description="When the operator deletes this route (RFC 3339), recording it in the "
        "flow's history with reason 'expired'; never on 'default', never in the past when "
        "set. Unset: the tag does not expire.",
    )


class RouteMode(StrEnum):
    EXCLUSIVE = "exclusive"
    SHARED = "shared"


class FlowRouteStatus(Model):
    """Observed state of a route, written by the operator."""

    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready (False with VersionNotFound when a version is gone); "
        "SchemaCompatible (False with IncompatibleSchema when the route moved to a version "
        "that rejects inputs its earlier target accepted).",
    )
    mode: RouteMode | None = Field(None, description="exclusive or shared, for printing.")
    resolved_version: int | None = Field(
        None, description="The single version this route resolves to, when it resolves to one."
    )
    schema_baseline: list[int] | None = Field(
        None,
        description="The versions this route last routed to with compatible input schemas "
        "(or accepted on purpose): a move to a version that rejects inputs they accept sets "
        "SchemaCompatible=False.",
    )
    observed_generation: int | None = Field(None, description="Generation last reconciled.")


# --- FlowInvocation -----------------------------------------------------------


class FlowInvocationSpec(Model):
    """A request to start one execution of a deployed flow."""

    model_config = ConfigDict(
        json_schema_extra={
            CEL: [
                {
                    "rule": "!(has(self.tag) && has(self.version))",
                    "message": "set at most one of tag and version",
                },
                {
                    "rule": "self.flow == oldSelf.flow && has(self.tag) == has(oldSelf.tag) "
                    "&& (!has(self.tag) || self.tag == oldSelf.tag) "
                    "&& has(self.version) == has(oldSelf.version) "
                    "&& (!has(self.version) || self.version == oldSelf.version) "
                    "&& self.inputs == oldSelf.inputs",
                    "message": "flow, tag, version and inputs of an invocation are immutable; "
                    "only cancelRequested may change",
                },
                {
                    "rule": "!oldSelf.cancelRequested || self.cancelRequested",
                    "message": "a cancel request cannot be withdrawn",
                },
            ]
        }
    )

    flow: str = _flow_field()
    tag: str | None = _tag_field("Route to invoke; omit tag and version for 'default'.", None)
    version: int | None = Field(None, ge=1, description="Exact version to invoke.")
    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description="Inputs of this run; they override the deploy-time inputs key by key.",
        # An explicit default so the immutability rule can compare it on every update.
        json_schema_extra={PRESERVE: True, "default": {}},
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Deadline of this run; overrides the stack default."
    )
    backoff_limit: int | None = Field(
        None, ge=0, le=20, description="Retries of this run; overrides the stack default."
    )
    ttl_seconds_after_finished: int | None = Field(
        None,
        ge=0,
        description="Delete this invocation this long after it finished "
        "(default: its version's stack, else the operator's).",
    )
    history_limit: int | None = Field(
        None,
        ge=0,
        description="Delete this invocation once this many newer finished runs of its flow "
        "exist (default: its version's stack, else the operator's).",
    )
    resolve_deadline_seconds: int | None = Field(
        None,
        ge=0,
        le=86400,
        description="How long resolution may wait for what it names to appear (a new flow's "
        "default route, a tag applied in the same GitOps sync) before the invocation fails "
        "(default: the operator's, 60 s).",
    )
    cancel_requested: bool = Field(
        False, description="Set to true to cancel: the run's Job is deleted, phase Cancelled."
    )


class SelectorKind(StrEnum):
    TAG = "tag"
    VERSION = "version"
    DEFAULT = "default"


class ResolvedChain(Model):
    """The whole resolution chain of an invocation, frozen when it was resolved."""

    selector: SelectorKind = Field(description="What was asked for: tag, version or default.")
    tag: str | None = Field(None, description="The tag asked for (or 'default').")
    version: int = Field(description="The version it resolved to.")
    deployment: str = Field(description="FlowDeployment name of that version.")
    snapshot_name: str = Field(description="Kitaru snapshot name kitaru::<flow>::v<N>.")
    image: str = Field(description="Image the run uses.")
    source_sha256: str | None = Field(None, description="sha256 of the frozen source, if any.")
    inputs_hash: str = Field(description="sha256 of the merged inputs (canonical JSON).")


class FlowInvocationStatus(Model):
    """Observed state of an invocation, written by the operator."""

    conditions: list[Condition] = Field(default_factory=list, description="Resolved, Succeeded.")
    phase: Phase | None = Field(None, description="Pending, Running, Completed, Failed, Cancelled.")
    resolved: ResolvedChain | None = Field(None, description="The frozen resolution chain.")
    job_name: str | None = Field(None, description="Name of the Job running this invocation.")
    attempts: int = Field(0, ge=0, description="Attempts started so far (1 + retries).")
    start_time: str | None = Field(None, description="When the run started (RFC 3339).")
    completion_time: str | None = Field(None, description="When the run finished (RFC 3339).")
    result: Any = Field(
        None,
        description="The flow's JSON result on success.",
        json_schema_extra={PRESERVE: True},
    )
    reason: str | None = Field(None, description="CamelCase reason of the final outcome.")
    message: str | None = Field(None, description="Failure message, or other detail.")
    observed_generation: int | None = Field(None, description="Generation last reconciled.")


# --- FlowHistory --------------------------------------------------------------


class RouteChangeAction(StrEnum):
    CREATED = "created"
    MOVED = "moved"
    ADDED = "added"
    REMOVED = "removed"
    MODE_CHANGED = "modeChanged"
    DELETED = "deleted"


class RecordedRoute(Model):
    """A route as the history last recorded it."""

    tag: str = _tag_field("Tag name.")
    exclusive: bool = Field(description="True if the tag routed to one version only.")
    versions: list[Annotated[int, Field(ge=1)]] = Field(description="Versions it routed to.")


class RouteChange(Model):
    """One recorded change of one route of the flow."""

    seq: int = Field(ge=1, description="Sequence number in the flow's history, never reused.")
    tag: str = _tag_field("Tag of the route that changed.")
    action: RouteChangeAction = Field(
        description="created, moved, added, removed, modeChanged or deleted."
    )
    from_versions: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list, description="Versions the tag routed to before (empty: none)."
    )
    to_versions: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list, description="Versions the tag routes to after (empty: deleted)."
    )
    exclusive: bool = Field(description="Mode of the route after the change (before, if deleted).")
    at: str = Field(description="When the API server stored the change (RFC 3339).")
    by: str = Field(
        "",
        description="Who changed it: the requesting user (admission-checked annotation "
        "kitaru.dev/changed-by), else the field manager from managedFields; empty if unknown.",
    )
    by_source: str = Field(
        "",
        description="Where `by` comes from: annotation, managedFields, operator (an "
        "expired tag), or empty.",
    )
    reason: str = Field(
        "",
        description="Why, from the kitaru.dev/reason annotation (--reason); 'expired' for a "
        "tag the operator removed at its expiresAt.",
    )
    generation: int | None = Field(None, description="metadata.generation of the route after it.")


class FlowHistorySpec(Model):
    """The recorded route changes of one flow, written by the operator only."""

    flow: str = _flow_field("Public flow name (a lowercase Python identifier); immutable.")
    routes: list[RecordedRoute] = Field(
        default_factory=list, description="Each live route as last recorded: what `from` is."
    )
    changes: list[RouteChange] = Field(
        default_factory=list,
        description="Recorded changes, oldest first; the oldest are dropped beyond the "
        "operator's --route-history-limit (100 by default).",
    )
    next_seq: int = Field(1, ge=1, description="Sequence number of the next change.")


class FlowHistoryStatus(Model):
    """Observed state of a history (nothing yet: the record is the spec)."""

    observed_generation: int | None = Field(None, description="Generation last written.")


# --- FlowPromotion ------------------------------------------------------------


class FlowPromotionSpec(Model):
    """A gated, recorded tag move: `toTag` moves to the version `fromTag` routes to once
    that version's measured runs meet the gate."""

    model_config = ConfigDict(
        json_schema_extra={
            CEL: [
                {
                    "rule": "self.fromTag != self.toTag",
                    "message": "fromTag and toTag must differ: a promotion moves toTag to "
                    "the version fromTag routes to",
                },
                {
                    "rule": "self.flow == oldSelf.flow && self.fromTag == oldSelf.fromTag "
                    "&& self.toTag == oldSelf.toTag && self.afterSeconds == oldSelf.afterSeconds "
                    "&& self.minRuns == oldSelf.minRuns && self.minSuccess == oldSelf.minSuccess "
                    "&& self.force == oldSelf.force",
                    "message": "a promotion's gate is immutable; only cancelRequested may "
                    "change (cancel it and create another)",
                },
                {
                    "rule": "!oldSelf.cancelRequested || self.cancelRequested",
                    "message": "a cancel request cannot be withdrawn",
                },
            ]
        }
    )

    flow: str = _flow_field()
    from_tag: str = _tag_field("The tag whose version is the candidate (e.g. canary).")
    to_tag: str = _tag_field("The tag moved to the candidate when the gate is met (e.g. stable).")
    after_seconds: int = Field(
        0,
        ge=0,
        le=PROMOTION_MAX_AFTER_SECONDS,
        description="The window: the tag moves no earlier than this many seconds after the "
        "promotion was created (0: as soon as minRuns runs finished).",
    )
    min_runs: int = Field(
        PROMOTION_DEFAULT_MIN_RUNS,
        ge=0,
        le=1_000_000,
        description="Finished runs of the candidate (started after the promotion was "
        "created, any selector) needed before the gate is decided.",
    )
    min_success: float = Field(
        PROMOTION_DEFAULT_MIN_SUCCESS,
        ge=0,
        le=1,
        description="Fraction of those runs that must have completed (0..1); below it the "
        "promotion ends NotPromoted.",
    )
    force: bool = Field(
        False,
        description="Move toTag even if the candidate's input schema rejects inputs "
        "toTag's current version accepts (like kitaru flow tag --force).",
    )
    reason: str | None = Field(
        None, max_length=256, description="Why: recorded in the route history with the numbers."
    )
    cancel_requested: bool = Field(
        False,
        description="Set to true to cancel a waiting promotion: phase Cancelled, nothing moved.",
    )


class PromotionPhase(StrEnum):
    WAITING = "Waiting"
    PROMOTED = "Promoted"
    NOT_PROMOTED = "NotPromoted"
    CANCELLED = "Cancelled"


class FlowPromotionStatus(Model):
    """Observed state of a promotion, written by the operator."""

    phase: PromotionPhase | None = Field(
        None, description="Waiting, Promoted, NotPromoted or Cancelled (the last three final)."
    )
    reason: str | None = Field(
        None,
        description="CamelCase reason: Waiting, GateMet, GateFailed, CandidateMoved, "
        "TagNotFound, AmbiguousTag, IncompatibleSchema, AnotherPromotionPending, Cancelled.",
    )
    message: str | None = Field(None, description="Why not yet, why not, or what moved.")
    candidate_version: int | None = Field(
        None, ge=1, description="The version fromTag routed to when first observed (frozen)."
    )
    previous_versions: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, description="What toTag routed to before the move (empty: it did not exist)."
    )
    runs: int = Field(0, ge=0, description="Finished runs of the candidate counted so far.")
    succeeded: int = Field(0, ge=0, description="Of them, runs that completed.")
    failed: int = Field(0, ge=0, description="Of them, runs that failed.")
    success_rate: float | None = Field(
        None, description="succeeded / runs (absent while no run finished)."
    )
    window_ends_at: str | None = Field(
        None, description="Creation time + afterSeconds (RFC 3339): the earliest move."
    )
    promoted_at: str | None = Field(None, description="When toTag was moved (RFC 3339).")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Promoted: Unknown while waiting, True once moved, False when not "
        "promoted or cancelled.",
    )
    observed_generation: int | None = Field(None, description="Generation last reconciled.")
