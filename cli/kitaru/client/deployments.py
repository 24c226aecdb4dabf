"""`KitaruClient().deployments`: versions, tags and invocations of deployed flows.

This class checks the arguments, reads, and invokes; the writes with their concurrency
rules (docs/ARCHITECTURE.md) are in `versions` (allocation, the first version's
`default`, the high-water mark), `tags` (compare-and-swap on the FlowRoute) and
`removal` (a whole flow, pruning).
"""

from __future__ import annotations

import builtins
import secrets
from collections.abc import Mapping
from contextlib import suppress
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kitaru.client.errors import Conflict, InvalidArguments
from kitaru.client.kube import AlreadyExists
from kitaru.client.promotions import (
    PromotionInfo,
    cancel_promotions,
    create_promotion,
    list_promotions,
)
from kitaru.client.records import (
    DeploymentInfo,
    FlowSummary,
    PruneSummary,
    RouteInfo,
    Tag,
    deployment_info,
    route_info,
)
from kitaru.client.removal import delete_whole_flow, prune_untagged
from kitaru.client.retry import attempts
from kitaru.client.rules import core_errors, not_found, of_flow, route_views
from kitaru.client.source import FlowLike, load_target, locate, package_flow
from kitaru.client.tags import (
    rollback_tag,
    set_limit,
    set_shadow,
    set_tag,
    split_route,
    unset_tag,
)
from kitaru.client.versions import check_deploy_tag, create_next_version
from kitaru.core.expiry import expiry_time, format_expiry
from kitaru.core.history import (
    HISTORIES,
    change_record,
    format_time,
    history_name,
    parse_history,
    parse_time,
    targets_at,
)
from kitaru.core.idempotency import idempotent_name, validate_idempotency_key
from kitaru.core.inputs import (
    check_input_schema,
    check_inputs,
    merge_inputs,
    schema_from_signature,
    validate_deploy_inputs,
    validate_inputs,
)
from kitaru.core.manifests import (
    build_invocation,
    build_source_config_map,
    route_view,
    source_config_map_name,
)
from kitaru.core.models import SourceSnapshot
from kitaru.core.names import (
    DEFAULT_TAG,
    DEPLOYMENTS,
    INVOCATIONS,
    PROMOTION_DEFAULT_MIN_RUNS,
    PROMOTION_DEFAULT_MIN_SUCCESS,
    ROUTES,
    check_routing_key,
    deployment_name,
    flow_dns,
    parse_deployment_name,
    route_name,
    validate_flow,
    validate_tag,
    validate_version,
)
from kitaru.core.queueing import validate_limit
from kitaru.core.retention import Retention
from kitaru.core.routing import (
    Resolution,
    RouteView,
    no_deployments,
    resolve,
    version_not_found,
)
from kitaru.core.shadow import InvalidShadow
from kitaru.core.tagging import SPLIT_EXAMPLE, InvalidSplit, parse_split, tags_for_version

if TYPE_CHECKING:
    from kitaru.client.client import KitaruClient
    from kitaru.client.handle import ExecutionHandle
    from kitaru.client.kube import Kube


class _ApiLookup:
    """The core's RouteLookup over API reads (a handful of GETs per resolution)."""

    def __init__(self, deployments: Deployments) -> None:
        self._deployments = deployments

    def has_deployments(self, flow: str) -> bool:
        return self._deployments._kube.exists(DEPLOYMENTS, field_selector=of_flow(flow))

    def has_version(self, flow: str, version: int) -> bool:
        return self._deployments._kube.get(DEPLOYMENTS, deployment_name(flow, version)) is not None

    def route(self, flow: str, tag: str) -> RouteView | None:
        return route_view(self._deployments._kube.get(ROUTES, route_name(flow, tag)))


class Deployments:
    """Deploy, list, resolve, route and invoke flow versions in the connection's project."""

    def __init__(self, client: KitaruClient) -> None:
        self._client = client

    @property
    def _kube(self) -> Kube:
        return self._client.kube

    # --- reading -------------------------------------------------------------------

    def _objects(
        self, flow: str | None = None, plural: str = DEPLOYMENTS
    ) -> builtins.list[dict[str, Any]]:
        """Objects of a kind for `flow` (selected on spec.flow by the API server, so
        kubectl-applied objects need no labels), or of every flow."""
        return self._kube.list(plural, field_selector=of_flow(flow) if flow else "")

    def _info(self, obj: dict[str, Any], routes: builtins.list[RouteView]) -> DeploymentInfo:
        spec = obj.get("spec") or {}
        flow_routes = [r for r in routes if r.flow == spec.get("flow")]
        refs = tags_for_version(flow_routes, int(spec.get("version") or 0))
        return deployment_info(obj, [Tag(r.tag, r.exclusive, r.weight) for r in refs])

    def list(self, flow: str | None = None) -> list[DeploymentInfo]:
        """Deployment versions (of one flow, or all), with the tags routed to each."""
        if flow is not None:
            with core_errors():
                validate_flow(flow)
        routes = route_views(self._kube, flow)
        infos = [self._info(o, routes) for o in self._objects(flow)]
        return sorted(infos, key=lambda d: (d.flow, d.version))

    def resolve(
        self,
        flow: str,
        tag: str | None = None,
        version: int | None = None,
        *,
        routing_key: str | None = None,
        invocation: str = "",
    ) -> Resolution:
        """The version `flow` + tag/version resolves to now (neither ⇒ the `default` route);
        on a split tag, for an invocation with that `routing_key`, else that name."""
        with core_errors():
            validate_flow(flow)
            if tag is not None:
                validate_tag(tag)
            if version is not None:
                validate_version(version)
            return resolve(
                _ApiLookup(self),
                flow,
                tag=tag,
                version=version,
                routing_key=routing_key,
                invocation=invocation,
            )

    def get(
        self,
        flow: str,
        tag: str | None = None,
        version: int | None = None,
        *,
        routing_key: str | None = None,
        invocation: str = "",
    ) -> DeploymentInfo:
        """The deployment a tag or version resolves to (neither ⇒ the `default` route)."""
        resolution = self.resolve(
            flow, tag, version, routing_key=routing_key, invocation=invocation
        )
        obj = self._kube.get(DEPLOYMENTS, deployment_name(flow, resolution.version))
        if obj is None:
            # Deleted between the resolution and this read: the same answer as before it.
            raise not_found(version_not_found(flow, resolution.version))
        return self._info(obj, route_views(self._kube, flow))

    def routes(self, flow: str | None = None) -> builtins.list[RouteInfo]:
        """The tags of a flow (or of all flows) and the versions each routes to."""
        infos = [route_info(o) for o in self._objects(flow, ROUTES)]
        return sorted(infos, key=lambda r: (r.flow, r.tag != DEFAULT_TAG, r.tag))

    def flows(self) -> builtins.list[FlowSummary]:
        """Every flow with deployments or routes in the project."""
        versions: dict[str, list[int]] = {}
        for obj in self._kube.items(DEPLOYMENTS, metadata_only=True):
            parsed = parse_deployment_name(obj["metadata"]["name"])
            if parsed is not None:
                versions.setdefault(parsed[0], []).append(parsed[1])
        tags: dict[str, list[RouteView]] = {}
        for view in route_views(self._kube):
            tags.setdefault(view.flow, []).append(view)
        summaries = []
        for flow in sorted(set(versions) | set(tags)):
            routes = sorted(tags.get(flow, []), key=lambda r: (r.tag != DEFAULT_TAG, r.tag))
            default = next((r for r in routes if r.tag == DEFAULT_TAG), None)
            summaries.append(
                FlowSummary(
                    flow=flow,
                    versions=tuple(sorted(versions.get(flow, []))),
                    default_version=min(default.versions) if default else None,
                    tags=tuple(r.tag for r in routes),
                )
            )
        return summaries

    # --- deploying -----------------------------------------------------------------

    def deploy(
        self,
        target: str | FlowLike,
        *,
        inputs: Mapping[str, Any] | None = None,
        tag: str | None = None,
        exclusive: bool = False,
        image: str | None = None,
        untagged: bool = False,
        retention: Retention | None = None,
        force: bool = False,
        max_concurrency: int | None = None,
    ) -> DeploymentInfo:
        """Deploy a flow from source as its next version with one tag (none given ⇒ `default`).

        `target` is `path/to/file.py:flow_name` or an imported `@flow` object. The
        inputs are checked against the flow's signature before anything is created;
        the flow's project (`kitaru.client.source`) is stored in an immutable ConfigMap
        with its sha256.
        `untagged=True` (`kitaru build`) creates the version without a tag. `retention`
        says how long this version's finished runs are kept (default: the operator's).
        The tag it takes (`default` without one) must keep accepting what its callers
        send: a new input schema that rejects inputs the tag's current version accepts
        is refused before anything is created (IncompatibleSchema), unless `force=True`.
        `max_concurrency` limits the runs through the tag it takes (`limit`).
        """
        if untagged and tag is not None:
            raise InvalidArguments("an untagged build takes no tag", kind="InvalidArguments")
        if untagged and max_concurrency is not None:
            raise InvalidArguments(
                "an untagged build has no route to limit: deploy it with a tag",
                kind="InvalidLimit",
            )
        inputs = {} if inputs is None else inputs
        if isinstance(target, str):
            flow_obj, path, attr = load_target(target)
        else:
            flow_obj = target
            path, attr = locate(flow_obj)
        # Everything that can be checked here is, before the source ConfigMap is created.
        with core_errors():
            validate_flow(flow_obj.name)
            if tag is not None:
                validate_tag(tag)
            check_inputs(inputs)
            if max_concurrency is not None:
                validate_limit(max_concurrency)
            schema = schema_from_signature(flow_obj.func, inputs)
            validate_deploy_inputs(inputs, schema)
        if not untagged:
            check_deploy_tag(self._kube, flow_obj.name, tag, schema, force)
        package = package_flow(flow_obj, path, attr)
        config_map = build_source_config_map(package.flow, package.files, package.sha256)
        with suppress(AlreadyExists):  # content-addressed: the same source is already stored
            self._kube.create_config_map(config_map)
        # The paths are in the ConfigMap's manifest, not in the version: a project's file
        # list would otherwise sit in every cache of every version (the operator's too).
        source = SourceSnapshot(
            config_map=source_config_map_name(package.flow, package.sha256),
            sha256=package.sha256,
        )
        info = self.create_version(
            package.flow,
            entrypoint=package.entrypoint,
            image=image,
            inputs=inputs,
            input_schema=schema,
            source=source,
            git=package.git,
            tag=tag,
            exclusive=exclusive,
            untagged=untagged,
            retention=retention,
            force=force,
        )
        if max_concurrency is not None:
            set_limit(self._kube, package.flow, tag or DEFAULT_TAG, max_concurrency)
        return info

    def create_version(
        self,
        flow: str,
        *,
        entrypoint: str,
        image: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        input_schema: Mapping[str, Any] | None = None,
        source: SourceSnapshot | None = None,
        git: Any = None,
        tag: str | None = None,
        exclusive: bool = False,
        untagged: bool = False,
        retention: Retention | None = None,
        force: bool = False,
    ) -> DeploymentInfo:
        """Create the next version of `flow` from an already-built snapshot, then tag it
        (refused like `deploy` when the tag's callers would break, unless `force`)."""
        with core_errors():
            validate_flow(flow)
            if tag is not None:
                validate_tag(tag)
            if input_schema:
                check_input_schema(input_schema)
        version, body = create_next_version(
            self._kube,
            flow,
            entrypoint=entrypoint,
            image=image,
            inputs=inputs,
            input_schema=input_schema,
            source=source,
            git=git,
            tag=tag,
            exclusive=exclusive,
            untagged=untagged,
            retention=retention,
            force=force,
        )
        return self._info(
            self._kube.get(DEPLOYMENTS, deployment_name(flow, version)) or body,
            route_views(self._kube, flow),
        )

    # --- routing -------------------------------------------------------------------

    def tag(
        self,
        flow: str,
        tag: str,
        version: int | None = None,
        exclusive: bool = False,
        force: bool = False,
        reason: str | None = None,
        expires: str | None = None,
        split: Mapping[Any, Any] | str | None = None,
    ) -> RouteInfo:
        """Route `tag` to `version`: exclusive moves it there, shared adds the version;
        or, with `split` ({2: 90, 3: 10} or "2=90,3=10"), send each invocation of the tag
        to one of those versions by weight (percent; a `routing_key` makes it sticky).

        Refused with IncompatibleSchema, naming each input, when a version new to the tag
        would reject inputs the tag's current version(s) accept; `force=True` moves it
        anyway. `reason` is recorded in the route history. `expires` (a duration: 30m,
        12h, 7d) makes the operator remove the tag then (InvalidExpiry on `default` or a
        bad duration); without it the tag does not expire, also when it did before."""
        with core_errors():
            validate_flow(flow)
            validate_tag(tag)
            target = _tag_target(flow, tag, version, exclusive, split)
            targets = [target] if isinstance(target, int) else sorted(target)
            for v in targets:
                validate_version(v)
            expires_at = (
                format_expiry(expiry_time(tag, expires, datetime.now(UTC)))
                if expires is not None
                else None
            )
        for v in targets:
            if self._kube.get(DEPLOYMENTS, deployment_name(flow, v)) is None:
                raise not_found(version_not_found(flow, v))
        if not isinstance(target, int):
            return split_route(
                self._kube, flow, tag, target, force=force, reason=reason, expires_at=expires_at
            )
        return set_tag(
            self._kube,
            flow,
            tag,
            target,
            exclusive,
            force=force,
            reason=reason,
            expires_at=expires_at,
        )

    def shadow(
        self,
        flow: str,
        tag: str,
        version: int | None = None,
        fraction: float | None = None,
        off: bool = False,
    ) -> RouteInfo:
        """Mirror `fraction` of the tag's invocations to the candidate `version` (shadow
        runs: same inputs, results kept beside the primary's, never returned to the
        caller; compare them with `executions.diff`), or with `off=True` stop."""
        with core_errors():
            validate_flow(flow)
            validate_tag(tag)
            if off:
                if version is not None or fraction is not None:
                    raise InvalidShadow("pass either --off or --version and --fraction, not both")
            else:
                if version is None or fraction is None:
                    raise InvalidShadow(
                        f"pass the candidate version and the fraction to mirror, e.g. kitaru "
                        f"flow shadow {flow} {tag} --version 3 --fraction 0.2 (or --off)"
                    )
                validate_version(version)
        if (
            version is not None
            and self._kube.get(DEPLOYMENTS, deployment_name(flow, version)) is None
        ):
            raise not_found(version_not_found(flow, version))
        return set_shadow(self._kube, flow, tag, None if off else version, fraction)

    def untag(
        self, flow: str, tag: str, version: int | None = None, reason: str | None = None
    ) -> RouteInfo:
        """Take `tag` off `version` (or off its only version); `default` can only be moved."""
        with core_errors():
            validate_flow(flow)
            validate_tag(tag)
            if version is not None:
                validate_version(version)
        return unset_tag(self._kube, flow, tag, version, reason)

    def limit(self, flow: str, max_concurrency: int | None, tag: str | None = None) -> RouteInfo:
        """Limit how many runs may be active at once — of the whole flow, or with `tag`
        of the runs invoked through that tag; None clears the limit. Runs beyond it wait
        in phase Queued and start first-in first-out. Returns the route that holds it."""
        with core_errors():
            validate_flow(flow)
            if tag is not None:
                validate_tag(tag)
            if max_concurrency is not None:
                validate_limit(max_concurrency)
        return set_limit(self._kube, flow, tag, max_concurrency)

    # --- route history ---------------------------------------------------------------

    def history(
        self, flow: str, tag: str | None = None, at: str | datetime | None = None
    ) -> dict[str, Any]:
        """The recorded route changes of `flow` (of `tag` only, if given), oldest first,
        each with `byVerified` (`by` checked by the API server, or only inferred from a
        field manager the writer named); with `at`: what each tag (or `tag`) routed to
        at that time."""
        with core_errors():
            validate_flow(flow)
            if tag is not None:
                validate_tag(tag)
            when = parse_time(at) if isinstance(at, str) else at
        obj = self._kube.get(HISTORIES, history_name(flow))
        if obj is None:
            if not self._kube.exists(DEPLOYMENTS, field_selector=of_flow(flow)):
                raise not_found(no_deployments(flow))
            obj = None
        history = parse_history(obj, flow)
        if when is None:
            changes = [change_record(c) for c in history.changes if tag is None or c.tag == tag]
            return {"flow": flow, "tag": tag, "changes": changes}
        with core_errors():
            routes = targets_at(history, when)
        if tag is not None:
            routes = {tag: routes.get(tag, [])}
        return {"flow": flow, "tag": tag, "at": format_time(when), "routes": routes}

    def rollback(self, flow: str, tag: str, reason: str | None = None) -> RouteInfo:
        """Move `tag` back to its target before its last recorded change (compare-and-
        swap); recorded in the history with `reason` (default 'rollback')."""
        with core_errors():
            validate_flow(flow)
            validate_tag(tag)
        return rollback_tag(self._kube, flow, tag, reason)

    # --- gated promotion ------------------------------------------------------------

    def promote(
        self,
        flow: str,
        from_tag: str,
        to_tag: str,
        after: str | int | None = None,
        min_runs: int = PROMOTION_DEFAULT_MIN_RUNS,
        min_success: float = PROMOTION_DEFAULT_MIN_SUCCESS,
        force: bool = False,
        reason: str | None = None,
    ) -> PromotionInfo:
        """Create a gated promotion: the operator moves `to_tag` (exclusive) to the version
        `from_tag` routes to once the window `after` (30m, 1h, 7d; 0/None: none) has passed
        and `min_runs` runs of it have finished with a success rate >= `min_success` — or
        ends it NotPromoted, saying why. The move is recorded in the route history."""
        return create_promotion(
            self._kube,
            flow,
            from_tag,
            to_tag,
            after=after,
            min_runs=min_runs,
            min_success=min_success,
            force=force,
            reason=reason,
        )

    def promotions(self, flow: str, to_tag: str | None = None) -> builtins.list[PromotionInfo]:
        """The promotions of `flow` (of `to_tag` only), oldest first, with their numbers."""
        with core_errors():
            validate_flow(flow)
            if to_tag is not None:
                validate_tag(to_tag)
        return list_promotions(self._kube, flow, to_tag)

    def cancel_promotion(self, flow: str, to_tag: str) -> builtins.list[PromotionInfo]:
        """Cancel the waiting promotion(s) of `flow`'s `to_tag`: nothing moves."""
        with core_errors():
            validate_flow(flow)
            validate_tag(to_tag)
        return cancel_promotions(self._kube, flow, to_tag)

    # --- deleting ------------------------------------------------------------------

    def delete(self, flow: str, version: int) -> DeploymentInfo:
        """Delete one version; the API server refuses while it holds an exclusive tag."""
        with core_errors():
            validate_flow(flow)
            validate_version(version)
        name = deployment_name(flow, version)
        obj = self._kube.get(DEPLOYMENTS, name)
        if obj is None:
            raise not_found(version_not_found(flow, version))
        info = self._info(obj, route_views(self._kube, flow))
        self._kube.delete(DEPLOYMENTS, name)
        return info

    def delete_flow(self, flow: str) -> FlowSummary:
        """Delete every route and version of `flow`, `default` included (on purpose).

        A deploy racing the delete is swept up too (`removal.delete_whole_flow`).
        """
        with core_errors():
            validate_flow(flow)
        return delete_whole_flow(self._kube, flow)

    def prune(self, flow: str, keep: int) -> PruneSummary:
        """Delete the flow's versions that hold no tag, except the newest `keep`.

        A version that holds any tag is never deleted, and no number is handed out again.
        """
        with core_errors():
            validate_flow(flow)
        if keep < 0:
            raise InvalidArguments(f"--keep must be 0 or more, not {keep}", kind="InvalidArguments")
        return prune_untagged(self._kube, flow, keep)

    # --- invoking ------------------------------------------------------------------

    def invoke(
        self,
        flow: str,
        tag: str | None = None,
        version: int | None = None,
        inputs: Mapping[str, Any] | None = None,
        retention: Retention | None = None,
        routing_key: str | None = None,
        idempotency_key: str | None = None,
    ) -> ExecutionHandle:
        """Start a new execution of `flow` by tag or version (neither ⇒ `default`).

        The route is resolved and the merged inputs are validated first, so a bad
        request creates nothing; the operator then resolves it again authoritatively.
        On a split tag, invocations with the same `routing_key` run the same version.
        With `idempotency_key`, the same key and request within 24 h return the execution
        it started (`handle.existing`); the same key with another request is an error.
        """
        from kitaru.client.handle import ExecutionHandle
        from kitaru.client.idempotency import create_once

        inputs = {} if inputs is None else inputs
        with core_errors():
            validate_flow(flow)
            check_inputs(inputs)
            if routing_key is not None:
                check_routing_key(routing_key)
            if idempotency_key is not None:
                validate_idempotency_key(idempotency_key)

        def checked(name: str) -> tuple[DeploymentInfo, dict[str, Any]]:
            """The version the invocation named `name` resolves to (a split tag chooses by
            the hash of the name, without a routing key), its inputs checked; the body."""
            deployment = self.get(
                flow, tag=tag, version=version, routing_key=routing_key, invocation=name
            )
            with core_errors():
                validate_inputs(merge_inputs(deployment.inputs, inputs), deployment.input_schema)
            body = build_invocation(
                flow,
                tag=tag,
                version=version,
                inputs=inputs,
                retention=retention,
                name=name,
                routing_key=routing_key,
                idempotency_key=idempotency_key,
                created_by=self._kube.username(),
            )
            return deployment, body

        existing = False
        if idempotency_key is not None:
            deployment, body = checked(idempotent_name(flow, idempotency_key))
            created, existing = create_once(self._kube, body, idempotency_key)
        else:
            for _ in attempts():
                # Named here, not by the API server: see `checked`.
                deployment, body = checked(random_invocation_name(flow))
                try:
                    created = self._kube.create(INVOCATIONS, body)
                    break
                except AlreadyExists:  # the name was taken: 1 in 14 million
                    continue
            else:
                raise Conflict(f"no free execution name for flow '{flow}'; try again")
        resolved = ((created.get("status") or {}).get("resolved") or {}).get("version")
        return ExecutionHandle(
            self._client.executions,
            created["metadata"]["name"],
            flow,
            resolved or deployment.version,
            idempotency_key=idempotency_key,
            existing=existing,
        )


# The API server's generateName alphabet: no vowels, no look-alike digits.
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def random_invocation_name(flow: str) -> str:
    """`<flow-dns>-xxxxx`, as the API server's generateName would make it."""
    suffix = "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))
    return f"{flow_dns(flow)[:57]}-{suffix}"


def _tag_target(
    flow: str,
    tag: str,
    version: int | None,
    exclusive: bool,
    split: Mapping[Any, Any] | str | None,
) -> int | dict[int, int]:
    """The version of a plain tag command, or the weights of a split; refuses a mix of
    the two, and neither."""
    if split is None:
        if version is None:
            raise InvalidSplit(
                f"pass the version tag '{tag}' routes to (--version N), or split it between "
                f"versions: kitaru flow tag {flow} {tag} --split {SPLIT_EXAMPLE}"
            )
        return version
    if version is not None:
        raise InvalidSplit("pass either --version or --split, not both")
    if exclusive:
        raise InvalidSplit("a split tag is not exclusive: drop --exclusive")
    if isinstance(split, str):
        return parse_split(split)
    try:
        return {int(v): int(w) for v, w in split.items()}
    except (TypeError, ValueError, AttributeError):
        raise InvalidSplit(
            f"split maps versions to percents, e.g. {{2: 90, 3: 10}}; got {str(split)[:60]}"
        ) from None
