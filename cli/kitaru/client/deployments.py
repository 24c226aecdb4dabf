"""`KitaruClient().deployments`: versions, tags and invocations of deployed flows.

Concurrency rules (docs/ARCHITECTURE.md):
- deploy creates `<flow-dns>-v<N>` with N = max(existing, high-water mark) + 1 and,
  when the name is taken (409) or admission refuses a reused number, tries again
  with the next number — concurrent deploys never collide and never lose a version;
- tag/untag are compare-and-swap on the FlowRoute: read, apply the core rule,
  replace with the read resourceVersion (or create), and start over on 409.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from kitaru.client.errors import Conflict, InvalidArguments, NotFound, Rejected, ResolutionFailed
from kitaru.client.kube import AlreadyExists, StaleObject
from kitaru.client.manifests import (
    build_deployment,
    build_invocation,
    build_route,
    build_source_config_map,
    route_view,
    source_config_map_name,
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
from kitaru.client.retry import attempts
from kitaru.client.source import FlowLike, load_target, locate, package_flow
from kitaru.core.inputs import (
    InvalidInputs,
    check_inputs,
    merge_inputs,
    schema_from_signature,
    validate_inputs,
)
from kitaru.core.models import SourceSnapshot
from kitaru.core.names import (
    ANNOTATION_DELETING_FLOW,
    DEFAULT_TAG,
    DEPLOYMENTS,
    INVOCATIONS,
    ROUTES,
    InvalidName,
    deployment_name,
    parse_deployment_name,
    route_name,
    validate_flow,
    validate_tag,
    validate_version,
)
from kitaru.core.retention import Retention
from kitaru.core.routing import Resolution, ResolutionError, RouteView, resolve
from kitaru.core.tagging import TagError, apply_tag, remove_tag, tags_for_version
from kitaru.core.versioning import next_version, route_high_water_mark, with_high_water_mark

if TYPE_CHECKING:
    from kitaru.client.client import KitaruClient
    from kitaru.client.handle import ExecutionHandle
    from kitaru.client.kube import Kube

DELETE_SWEEPS = 10


def of_flow(flow: str) -> str:
    """The field selector of one flow's objects (a selectable field of every kind)."""
    return f"spec.flow={flow}"


RUNNER_IMAGE_ENV = "KITARU_RUNNER_IMAGE"


def default_runner_image() -> str:
    """The stack's runner image: `KITARU_RUNNER_IMAGE`, else the one matching this package."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package_version = version("kitaru-k8s")
    except PackageNotFoundError:
        package_version = "latest"
    return os.environ.get(RUNNER_IMAGE_ENV) or f"ghcr.io/kitaru-k8s/runner:{package_version}"


@contextmanager
def core_errors() -> Iterator[None]:
    """Core rule violations as KitaruErrors, messages unchanged."""
    try:
        yield
    except ResolutionError as exc:
        raise ResolutionFailed(exc.message, kind=exc.reason) from exc
    except InvalidInputs as exc:
        raise InvalidArguments(exc.message, kind="InvalidInputs") from exc
    except InvalidName as exc:  # InvalidVersion too
        raise InvalidArguments(str(exc), kind=type(exc).__name__) from exc
    except TagError as exc:
        raise InvalidArguments(str(exc), kind="TagError") from exc


def check_deploy_inputs(inputs: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Deploy-time inputs may leave required inputs to the invocations; the rest must fit."""
    partial = {k: v for k, v in schema.items() if k != "required"}
    validate_inputs(inputs, partial)


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

    def _route_views(self, flow: str | None = None) -> builtins.list[RouteView]:
        return [v for o in self._objects(flow, ROUTES) if (v := route_view(o)) is not None]

    def _info(self, obj: dict[str, Any], routes: builtins.list[RouteView]) -> DeploymentInfo:
        spec = obj.get("spec") or {}
        flow_routes = [r for r in routes if r.flow == spec.get("flow")]
        refs = tags_for_version(flow_routes, int(spec.get("version") or 0))
        return deployment_info(obj, [Tag(r.tag, r.exclusive) for r in refs])

    def list(self, flow: str | None = None) -> list[DeploymentInfo]:
        """Deployment versions (of one flow, or all), with the tags routed to each."""
        if flow is not None:
            with core_errors():
                validate_flow(flow)
        routes = self._route_views(flow)
        infos = [self._info(o, routes) for o in self._objects(flow)]
        return sorted(infos, key=lambda d: (d.flow, d.version))

    def resolve(self, flow: str, tag: str | None = None, version: int | None = None) -> Resolution:
        """The version `flow` + tag/version resolves to now (neither ⇒ the `default` route)."""
        with core_errors():
            validate_flow(flow)
            if tag is not None:
                validate_tag(tag)
            if version is not None:
                validate_version(version)
            return resolve(_ApiLookup(self), flow, tag=tag, version=version)

    def get(self, flow: str, tag: str | None = None, version: int | None = None) -> DeploymentInfo:
        """The deployment a tag or version resolves to (neither ⇒ the `default` route)."""
        resolution = self.resolve(flow, tag, version)
        obj = self._kube.get(DEPLOYMENTS, deployment_name(flow, resolution.version))
        if obj is None:
            # Deleted between the resolution and this read: the same answer as before it.
            raise NotFound(
                f"flow '{flow}' has no version {resolution.version}", kind="VersionNotFound"
            )
        return self._info(obj, self._route_views(flow))

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
        for view in self._route_views():
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
    ) -> DeploymentInfo:
        """Deploy a flow from source as its next version with one tag (none given ⇒ `default`).

        `target` is `path/to/file.py:flow_name` or an imported `@flow` object. The
        inputs are checked against the flow's signature before anything is created;
        the module file is stored in an immutable ConfigMap with its sha256.
        `untagged=True` (`kitaru build`) creates the version without a tag. `retention`
        says how long this version's finished runs are kept (default: the operator's).
        """
        if untagged and tag is not None:
            raise InvalidArguments("an untagged build takes no tag", kind="InvalidArguments")
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
            schema = schema_from_signature(flow_obj.func, inputs)
            check_deploy_inputs(inputs, schema)
        package = package_flow(flow_obj, path, attr)
        config_map = build_source_config_map(package.flow, package.files, package.sha256)
        with suppress(AlreadyExists):  # content-addressed: the same source is already stored
            self._kube.create_config_map(config_map)
        source = SourceSnapshot(
            config_map=source_config_map_name(package.flow, package.sha256),
            sha256=package.sha256,
            files=sorted(package.files),
        )
        return self.create_version(
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
        )

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
    ) -> DeploymentInfo:
        """Create the next version of `flow` from an already-built snapshot, then tag it."""
        with core_errors():
            validate_flow(flow)
            if tag is not None:
                validate_tag(tag)
        existing, high_water_mark = self._version_state(flow)
        version = next_version(existing, high_water_mark)
        for _ in attempts():
            body = build_deployment(
                flow,
                version,
                entrypoint=entrypoint,
                image=image,
                runner_image=default_runner_image(),
                inputs=inputs,
                input_schema=input_schema,
                source=source,
                git=git,
                retention=retention,
            )
            try:
                self._kube.create(DEPLOYMENTS, body)
                break
            except AlreadyExists:
                version += 1
            except Rejected:
                # Admission refuses a number below the high-water mark: re-read, else give up.
                existing, high_water_mark = self._version_state(flow)
                retry = next_version(existing, high_water_mark)
                if retry <= version:
                    raise
                version = retry
        else:
            raise Conflict(f"could not allocate a version of flow '{flow}' after many tries")
        first = not existing and high_water_mark == 0 and version == 1
        if not untagged:
            self._set_tag(flow, tag or DEFAULT_TAG, version, exclusive)
        if first and (untagged or (tag or DEFAULT_TAG) != DEFAULT_TAG):
            self._ensure_default(flow, version)
        self._record_high_water_mark(flow, version)
        return self._info(
            self._kube.get(DEPLOYMENTS, deployment_name(flow, version)) or body,
            self._route_views(flow),
        )

    def _version_state(self, flow: str) -> tuple[builtins.list[int], int]:
        """The flow's existing versions (from names: no bodies) and its high-water mark."""
        names = self._kube.items(DEPLOYMENTS, field_selector=of_flow(flow), metadata_only=True)
        existing = [
            parsed[1]
            for obj in names
            if (parsed := parse_deployment_name(obj["metadata"]["name"])) is not None
        ]
        return existing, route_high_water_mark(
            self._kube.get(ROUTES, route_name(flow, DEFAULT_TAG))
        )

    def _record_high_water_mark(self, flow: str, version: int) -> None:
        """Raise the flow's mark now rather than when the operator gets to it, so a version
        deleted right after its deploy can never have its number handed out again."""
        for _ in attempts():
            current = self._kube.get(ROUTES, route_name(flow, DEFAULT_TAG))
            updated = None if current is None else with_high_water_mark(current, version)
            if updated is None:
                return
            with suppress(StaleObject):
                self._kube.replace(ROUTES, updated)
                return

    def _ensure_default(self, flow: str, version: int) -> None:
        """The first version gets `default` (the operator does the same; whoever is first wins)."""
        view = apply_tag(None, flow, DEFAULT_TAG, version, True)
        with suppress(AlreadyExists):
            self._kube.create(ROUTES, build_route(view))

    # --- routing -------------------------------------------------------------------

    def tag(self, flow: str, tag: str, version: int, exclusive: bool = False) -> RouteInfo:
        """Route `tag` to `version`: exclusive moves it there, shared adds the version."""
        with core_errors():
            validate_flow(flow)
            validate_tag(tag)
            validate_version(version)
        if self._kube.get(DEPLOYMENTS, deployment_name(flow, version)) is None:
            raise NotFound(
                f"flow '{flow}' has no version {version}; list its versions with: "
                f"kitaru flow deployments list {flow}",
                kind="VersionNotFound",
            )
        return self._set_tag(flow, tag, version, exclusive)

    def _set_tag(self, flow: str, tag: str, version: int, exclusive: bool) -> RouteInfo:
        for _ in attempts():
            current = self._kube.get(ROUTES, route_name(flow, tag))
            with core_errors():
                view = apply_tag(route_view(current), flow, tag, version, exclusive)
            try:
                if current is None:
                    return route_info(self._kube.create(ROUTES, build_route(view)))
                if view == route_view(current):
                    return route_info(current)
                return route_info(self._kube.replace(ROUTES, build_route(view, current)))
            except (AlreadyExists, StaleObject):
                continue
        raise Conflict(f"tag '{tag}' of flow '{flow}' kept changing; try again")

    def untag(self, flow: str, tag: str, version: int | None = None) -> RouteInfo:
        """Take `tag` off `version` (or off its only version); `default` can only be moved."""
        with core_errors():
            validate_flow(flow)
            validate_tag(tag)
            if version is not None:
                validate_version(version)
        for _ in attempts():
            current = self._kube.get(ROUTES, route_name(flow, tag))
            view = route_view(current)
            if current is None or view is None:
                raise NotFound(f"flow '{flow}' has no tag '{tag}'", kind="TagNotFound")
            target = version
            if target is None:
                if len(view.versions) > 1 and tag != DEFAULT_TAG:
                    listed = ", ".join(str(v) for v in sorted(view.versions))
                    raise InvalidArguments(
                        f"tag '{tag}' of flow '{flow}' routes to versions {listed}; pass --version",
                        kind="AmbiguousTag",
                    )
                target = min(view.versions)
            with core_errors():
                remaining = remove_tag(view, target)
            try:
                if remaining is None:
                    self._kube.delete(
                        ROUTES, route_name(flow, tag), current["metadata"].get("resourceVersion")
                    )
                    return RouteInfo(flow=flow, tag=tag, exclusive=view.exclusive, versions=())
                return route_info(self._kube.replace(ROUTES, build_route(remaining, current)))
            except StaleObject:
                continue
            except NotFound:
                continue
        raise Conflict(f"tag '{tag}' of flow '{flow}' kept changing; try again")

    # --- deleting ------------------------------------------------------------------

    def delete(self, flow: str, version: int) -> DeploymentInfo:
        """Delete one version; the API server refuses while it holds an exclusive tag."""
        with core_errors():
            validate_flow(flow)
            validate_version(version)
        name = deployment_name(flow, version)
        obj = self._kube.get(DEPLOYMENTS, name)
        if obj is None:
            raise NotFound(f"flow '{flow}' has no version {version}", kind="VersionNotFound")
        info = self._info(obj, self._route_views(flow))
        self._kube.delete(DEPLOYMENTS, name)
        return info

    def delete_flow(self, flow: str) -> FlowSummary:
        """Delete every route and version of `flow`, `default` included (on purpose).

        Every route of the flow is marked `kitaru.dev/deleting-flow` first, which lets the
        API server delete the versions its exclusive tags hold; versions go before routes,
        so the operator never sees versions without a `default` to bootstrap. A deploy
        racing the delete leaves something behind: the next sweep, at once, takes it.
        """
        with core_errors():
            validate_flow(flow)
        selected = of_flow(flow)
        deleted_versions: set[int] = set()
        deleted_tags: set[str] = set()
        for _ in range(DELETE_SWEEPS):
            routes = self._kube.list(ROUTES, field_selector=selected)
            versions = self._kube.list(DEPLOYMENTS, field_selector=selected)
            if not routes and not versions:
                break
            for route in routes:
                self._mark_deleting(route["metadata"]["name"])
            for obj in versions:
                with suppress(Rejected):  # a route created meanwhile: the next sweep marks it
                    self._delete_quietly(DEPLOYMENTS, obj["metadata"]["name"])
                    deleted_versions.add(int(obj["spec"]["version"]))
            for route in routes:
                self._delete_quietly(ROUTES, route["metadata"]["name"])
                deleted_tags.add(route["spec"]["tag"])
        else:
            raise Conflict(
                f"flow '{flow}' kept getting new versions while being deleted; try again"
            )
        if not deleted_versions and not deleted_tags:
            raise NotFound(f"flow '{flow}' has no deployments", kind="NoDeployments")
        return FlowSummary(flow, tuple(sorted(deleted_versions)), None, tuple(sorted(deleted_tags)))

    def _mark_deleting(self, route: str) -> None:
        with suppress(NotFound):
            self._kube.patch(
                ROUTES, route, {"metadata": {"annotations": {ANNOTATION_DELETING_FLOW: "true"}}}
            )

    def prune(self, flow: str, keep: int) -> PruneSummary:
        """Delete the flow's versions that hold no tag, except the newest `keep`.

        A version that holds any tag (exclusive or shared) is never deleted, and no
        number is handed out again: the high-water mark is raised to the newest version
        first. A tag moved onto a version while it is being pruned is the one race left:
        the API server still refuses a version holding an exclusive tag, and the operator
        drops a deleted version from shared routes.
        """
        with core_errors():
            validate_flow(flow)
        if keep < 0:
            raise InvalidArguments(f"--keep must be 0 or more, not {keep}", kind="InvalidArguments")
        existing, _ = self._version_state(flow)
        if not existing:
            raise NotFound(f"flow '{flow}' has no deployments", kind="NoDeployments")
        newest_first = sorted(existing, reverse=True)
        tagged = set().union(*(view.versions for view in self._route_views(flow)))
        self._record_high_water_mark(flow, newest_first[0])
        deleted = []
        for version in newest_first[keep:]:
            if version in tagged:
                continue
            try:
                self._kube.delete(DEPLOYMENTS, deployment_name(flow, version))
            except NotFound:
                continue
            except Rejected:  # an exclusive tag arrived meanwhile
                tagged.add(version)
                continue
            deleted.append(version)
        return PruneSummary(
            flow=flow,
            deleted=tuple(sorted(deleted)),
            kept_newest=tuple(sorted(newest_first[:keep])),
            kept_tagged=tuple(sorted(v for v in newest_first[keep:] if v in tagged)),
        )

    def _delete_quietly(self, plural: str, name: str) -> None:
        with suppress(NotFound):
            self._kube.delete(plural, name)

    # --- invoking ------------------------------------------------------------------

    def invoke(
        self,
        flow: str,
        tag: str | None = None,
        version: int | None = None,
        inputs: Mapping[str, Any] | None = None,
        retention: Retention | None = None,
    ) -> ExecutionHandle:
        """Start a new execution of `flow` by tag or version (neither ⇒ `default`).

        The route is resolved and the merged inputs are validated first, so a bad
        request creates nothing; the operator then resolves it again authoritatively.
        """
        from kitaru.client.handle import ExecutionHandle

        inputs = {} if inputs is None else inputs
        with core_errors():
            check_inputs(inputs)
        deployment = self.get(flow, tag=tag, version=version)
        with core_errors():
            validate_inputs(merge_inputs(deployment.inputs, inputs), deployment.input_schema)
        body = build_invocation(flow, tag=tag, version=version, inputs=inputs, retention=retention)
        created = self._kube.create(INVOCATIONS, body)
        return ExecutionHandle(
            self._client.executions, created["metadata"]["name"], flow, deployment.version
        )
