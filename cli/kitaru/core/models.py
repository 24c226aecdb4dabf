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
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from kitaru.core.idempotency import IDEMPOTENCY_KEY_MAX_LENGTH, IDEMPOTENCY_KEY_PATTERN
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
from kitaru.core.queueing import MAX_LIMIT

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
    weight: int | None = Field(
        None, description="For a weighted (split) tag: the percent of its invocations here."
    )


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


class WeightedVersion(Model):
    """One version of a weighted route and its share of the route's invocations."""

    version: int = Field(ge=1, description="Version number.")
    weight: int = Field(ge=0, le=100, description="Percent of the route's invocations it gets.")


class ShadowSpec(Model):
    """A candidate version that a fraction of the route's invocations is mirrored to."""

    version: int = Field(ge=1, description="The candidate version the shadow runs use.")
    fraction: float = Field(
        gt=0,
        le=1,
        description="The share of the route's invocations mirrored (0.2: one in five), "
        "chosen by the hash of the invocation's name.",
    )


class FlowRouteSpec(Model):
    """A tag of a flow and the version(s) it routes to."""

    model_config = ConfigDict(
        json_schema_extra={
            CEL: [
                {
                    "rule": f"self.tag != '{DEFAULT_TAG}' || !has(self.split)",
                    "message": f"the '{DEFAULT_TAG}' tag cannot be split: split another tag "
                    "(e.g. stable) and invoke it with --tag",
                },
                {
                    "rule": "!has(self.split) || !self.exclusive",
                    "message": "a split tag is not exclusive: set exclusive to false",
                },
                {
                    "rule": "!has(self.split) || (size(self.split) == size(self.versions)"
                    " && self.split.all(s, s.version in self.versions))",
                    "message": "split names each of the tag's versions once, and no other",
                },
                {
                    "rule": "!has(self.split) || self.split.map(s, s.weight).sum() == 100",
                    "message": "the weights of a split add up to 100",
                },
                {
                    "rule": "!has(self.shadow) || !(self.shadow.version in self.versions)",
                    "message": "a shadow runs a version the tag does not route to: pick "
                    "another shadow version, or remove the shadow",
                },
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
                {
                    "rule": f"self.tag == '{DEFAULT_TAG}' || !has(self.flowMaxConcurrency)",
                    "message": "flowMaxConcurrency limits the whole flow and is set on its "
                    f"'{DEFAULT_TAG}' route only (kitaru flow limit FLOW N)",
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
        max_length=1000,
        description="Versions this tag routes to (a set).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    split: list[WeightedVersion] | None = Field(
        None,
        min_length=2,
        max_length=16,
        description="Weighted routing: each invocation of the tag runs one of `versions`, "
        "chosen by weight (percent, adding up to 100) once, when it is resolved; by the hash "
        "of its routingKey when it has one (sticky), else of its name. Unset: the tag is "
        "exclusive or shared. A version a split names cannot be deleted.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["version"],
        },
    )
    shadow: ShadowSpec | None = Field(
        None,
        description="Shadow runs: a fraction of the invocations this tag resolves also run "
        "on a candidate version, with the same inputs; their results are kept beside the "
        "primary's (kitaru executions diff) and never returned to the caller.",
    )
    expires_at: datetime | None = Field(
        None,
        description="When the operator deletes this route (RFC 3339), recording it in the "
        "flow's history with reason 'expired'; never on 'default', never in the past when "
        "set. Unset: the tag does not expire.",
    )
    max_concurrency: int | None = Field(
        None,
        ge=1,
        le=MAX_LIMIT,
        description="Most runs invoked through this tag that may be active at once; more "
        "wait in phase Queued and start first-in first-out. Unset: no limit.",
    )
    flow_max_concurrency: int | None = Field(
        None,
        ge=1,
        le=MAX_LIMIT,
        description="On the 'default' route only: most runs of the whole flow (any tag or "
        "version) active at once; more wait in phase Queued. Unset: no limit.",
    )


class RouteMode(StrEnum):
    EXCLUSIVE = "exclusive"
    SHARED = "shared"
    WEIGHTED = "weighted"


class ShadowSummary(Model):
    """Agreement of the retained shadow runs of a route with their primaries."""

    version: int = Field(ge=1, description="The shadow version compared.")
    compared: int = Field(ge=0, description="Pairs where both runs have finished.")
    agreed: int = Field(
        ge=0, description="Pairs that agree: the same outcome and, if completed, the same result."
    )
    agreement_rate: float | None = Field(
        None, description="agreed / compared (unset before the first pair finishes)."
    )


class FlowRouteStatus(Model):
    """Observed state of a route, written by the operator."""

    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready (False with VersionNotFound when a version is gone); "
        "SchemaCompatible (False with IncompatibleSchema when the route moved to a version "
        "that rejects inputs its earlier target accepted).",
    )
    mode: RouteMode | None = Field(None, description="exclusive, shared or weighted, for printing.")
    resolved_version: int | None = Field(
        None, description="The single version this route resolves to, when it resolves to one."
    )
    split_summary: str | None = Field(
        None, description="A split tag's weights as version=percent pairs, for printing."
    )
    shadow: ShadowSummary | None = Field(
        None, description="How the shadow runs compare with their primaries so far."
    )
    schema_baseline: list[int] | None = Field(
        None,
        description="The versions this route last routed to with compatible input schemas "
        "(or accepted on purpose): a move to a version that rejects inputs they accept sets "
        "SchemaCompatible=False.",
    )
    highest_version: int | None = Field(
        None,
        ge=1,
        description="On a flow's default route: the highest version of the flow the operator "
        "has seen. Admission refuses a new version at or below it (version numbers are never "
        "reused); only the operator writes it (status subresource).",
    )
    observed_generation: int | None = Field(None, description="Generation last reconciled.")


# --- FlowInvocation -----------------------------------------------------------


def _invocation_rules(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """An invocation is a record: once created, only the cancel request may change (for
    every writer). The rule names every spec field, so a field added later is covered."""
    unchanged = " && ".join(
        f"has(self.{f.alias}) == has(oldSelf.{f.alias})"
        f" && (!has(self.{f.alias}) || self.{f.alias} == oldSelf.{f.alias})"
        for f in model.model_fields.values()
        if f.alias != "cancelRequested"
    )
    schema[CEL] = [
        {
            "rule": "!(has(self.tag) && has(self.version))",
            "message": "set at most one of tag and version",
        },
        {
            "rule": unchanged,
            "message": "an invocation's spec is immutable; only cancelRequested may change "
            "(kitaru executions cancel): start a new execution to run with other settings",
        },
        {
            "rule": "!oldSelf.cancelRequested || self.cancelRequested",
            "message": "a cancel request cannot be withdrawn",
        },
    ]


class FlowInvocationSpec(Model):
    """A request to start one execution of a deployed flow."""

    model_config = ConfigDict(json_schema_extra=_invocation_rules)

    flow: str = _flow_field()
    tag: str | None = _tag_field("Route to invoke; omit tag and version for 'default'.", None)
    version: int | None = Field(None, ge=1, description="Exact version to invoke.")
    routing_key: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="Sticky routing on a split tag: invocations with the same key run the same "
        "version (while the weights stay); ignored by exclusive and shared tags.",
    )
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
    shadow_of: str | None = Field(
        None,
        max_length=63,
        description="Set by the operator on a shadow run: the execution it mirrors (same "
        "inputs; its result is never returned to that execution's caller).",
    )
    idempotency_key: str | None = Field(
        None,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        max_length=IDEMPOTENCY_KEY_MAX_LENGTH,
        description="The caller's idempotency key (a record). kitaru, the SDK, MCP and the "
        "generated curl name the invocation after (flow, key), so the API server refuses a "
        "second one; with kubectl, a fixed metadata.name is the idempotency key.",
    )
    cancel_requested: bool = Field(
        False, description="Set to true to cancel: the run's Job is deleted, phase Cancelled."
    )


class SelectorKind(StrEnum):
    TAG = "tag"
    VERSION = "version"
    DEFAULT = "default"


class SplitChoice(Model):
    """How a split tag chose an invocation's version."""

    split: list[WeightedVersion] = Field(description="The tag's weights when it was resolved.")
    bucket: int = Field(
        ge=0,
        le=99,
        description="Where the invocation fell in 0..99: versions take consecutive ranges of "
        "buckets by weight, in version order.",
    )
    sticky: bool = Field(
        description="True: the bucket is the hash of the routing key; false: of the name."
    )


class ShadowRef(Model):
    """The shadow run of an execution."""

    name: str = Field(description="The shadow execution's name.")
    version: int = Field(ge=1, description="The version it runs.")


class ResolvedChain(Model):
    """The whole resolution chain of an invocation, frozen when it was resolved."""

    selector: SelectorKind = Field(description="What was asked for: tag, version or default.")
    tag: str | None = Field(None, description="The tag asked for (or 'default').")
    version: int = Field(description="The version it resolved to.")
    split: SplitChoice | None = Field(
        None, description="For a split tag: the weights, and the bucket that chose `version`."
    )
    shadow: ShadowRef | None = Field(
        None, description="The shadow run started beside this one, if the route mirrored it."
    )
    deployment: str = Field(description="FlowDeployment name of that version.")
    snapshot_name: str = Field(description="Kitaru snapshot name kitaru::<flow>::v<N>.")
    image: str = Field(description="Image the run uses.")
    source_sha256: str | None = Field(None, description="sha256 of the frozen source, if any.")
    inputs_hash: str = Field(description="sha256 of the merged inputs (canonical JSON).")


class FlowInvocationStatus(Model):
    """Observed state of an invocation, written by the operator."""

    conditions: list[Condition] = Field(default_factory=list, description="Resolved, Succeeded.")
    phase: Phase | None = Field(
        None, description="Queued, Pending, Running, Completed, Failed, Cancelled."
    )
    queue_position: int | None = Field(
        None,
        ge=1,
        description="While Queued: the place among its flow's queued runs (1: next to "
        "start); exact near the head, refreshed less often further back.",
    )
    queue_revision: int | None = Field(
        None,
        description="While Queued: the resourceVersion the invocation was created at, which "
        "orders the runs created in the same second (first-in first-out).",
    )
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
    REWEIGHTED = "reweighted"
    DELETED = "deleted"


class RecordedRoute(Model):
    """A route as the history last recorded it."""

    tag: str = _tag_field("Tag name.")
    exclusive: bool = Field(description="True if the tag routed to one version only.")
    versions: list[Annotated[int, Field(ge=1)]] = Field(description="Versions it routed to.")
    split: list[WeightedVersion] = Field(
        default_factory=list, description="Its weights, if it was split (empty: not split)."
    )


class RouteChange(Model):
    """One recorded change of one route of the flow."""

    seq: int = Field(ge=1, description="Sequence number in the flow's history, never reused.")
    tag: str = _tag_field("Tag of the route that changed.")
    action: RouteChangeAction = Field(
        description="created, moved, added, removed, modeChanged, reweighted or deleted."
    )
    from_versions: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list, description="Versions the tag routed to before (empty: none)."
    )
    to_versions: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list, description="Versions the tag routes to after (empty: deleted)."
    )
    from_split: list[WeightedVersion] = Field(
        default_factory=list, description="Weights before, if the tag was split."
    )
    to_split: list[WeightedVersion] = Field(
        default_factory=list, description="Weights after, if the tag is split."
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


# --- FlowSchedule -------------------------------------------------------------

# What the API server can check of a cron expression without parsing it (CEL has no
# cron): a macro, or five fields of cron characters. Ranges, steps and "never fires"
# are checked by every client before it writes, and by the operator (Ready=False) for
# kubectl and GitOps.
CRON_SHAPE = r"^(@[a-z]+|[0-9A-Za-z*,/-]+( +[0-9A-Za-z*,/-]+){4})$"
TIME_ZONE_SHAPE = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"


ConcurrencyPolicy = Literal["Allow", "Forbid", "Replace"]


class FlowScheduleSpec(Model):
    """Invoke a flow's route on a cron schedule (CronJob semantics)."""

    model_config = ConfigDict(
        json_schema_extra={
            CEL: [
                {
                    "rule": "!(has(self.tag) && has(self.version))",
                    "message": "set at most one of tag and version",
                },
                {
                    "rule": f"self.schedule.matches('{CRON_SHAPE}')",
                    "message": "schedule must be a cron expression of five fields (minute hour "
                    "day-of-month month day-of-week) like '0 3 * * *', or @hourly, @daily, "
                    "@weekly, @monthly, @yearly",
                },
                {
                    "rule": f"!has(self.timeZone) || self.timeZone.matches('{TIME_ZONE_SHAPE}')",
                    "message": "timeZone must be an IANA time zone name like Europe/Berlin",
                },
            ]
        }
    )

    schedule: str = Field(
        max_length=256,
        description="Cron expression: five fields (minute hour day-of-month month "
        "day-of-week), e.g. '0 3 * * *', or @yearly, @monthly, @weekly, @daily, @hourly.",
    )
    time_zone: str | None = Field(
        None,
        max_length=64,
        description="IANA time zone the schedule is read in, e.g. Europe/Berlin (default "
        "UTC). A wall time skipped by a DST change fires once right after the gap; a "
        "repeated one fires once, the first time.",
    )
    flow: str = _flow_field()
    tag: str | None = _tag_field(
        "Route to invoke at each tick, resolved as it stands then; omit tag and version "
        "for 'default'.",
        None,
    )
    version: int | None = Field(None, ge=1, description="Exact version to invoke.")
    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description="Inputs of every run; they override the deploy-time inputs key by key.",
        json_schema_extra={PRESERVE: True},
    )
    concurrency_policy: ConcurrencyPolicy = Field(
        "Allow",
        description="When a tick comes while a run of this schedule is unfinished: Allow "
        "starts another, Forbid skips the tick, Replace cancels the unfinished run(s) first.",
    )
    starting_deadline_seconds: int | None = Field(
        None,
        ge=1,
        description="A tick not started within this many seconds (operator down, schedule "
        "suspended) is skipped. Unset: the latest missed tick always runs.",
    )
    successful_runs_history_limit: int = Field(
        3, ge=0, le=1000, description="Completed runs of this schedule kept (oldest deleted)."
    )
    failed_runs_history_limit: int = Field(
        1,
        ge=0,
        le=1000,
        description="Failed or cancelled runs of this schedule kept (oldest deleted).",
    )
    suspend: bool = Field(
        False, description="True pauses the schedule: no new runs (unfinished ones go on)."
    )


class FlowScheduleStatus(Model):
    """Observed state of a schedule, written by the operator."""

    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready (False with InvalidSchedule or UnknownTimeZone when the operator "
        "cannot use the schedule).",
    )
    target: str | None = Field(
        None, description="What each tick invokes: 'tag T', 'version N' or 'default'."
    )
    last_schedule_time: str | None = Field(
        None, description="The last tick handled (started, or skipped by the policy)."
    )
    next_schedule_time: str | None = Field(
        None, description="The next tick (unset while suspended or invalid)."
    )
    last_successful_time: str | None = Field(
        None, description="When the last run that completed finished."
    )
    active: list[str] = Field(
        default_factory=list, description="Names of this schedule's unfinished runs."
    )
    observed_generation: int | None = Field(None, description="Generation last reconciled.")


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
