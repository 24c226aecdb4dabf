"""Route resolution: which version an invocation of (flow, tag | version) runs.

Pure and O(1): the caller supplies a `RouteLookup` backed by an in-memory index
(kopf indexes in the operator), never a LIST per invocation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kitaru.core.models import FlowRouteSpec, SelectorKind, SplitChoice, WeightedVersion
from kitaru.core.names import DEFAULT_TAG

# (version, weight) pairs in version order; empty: the route is not split.
Split = tuple[tuple[int, int], ...]
BUCKETS = 100


@dataclass(frozen=True)
class RouteView:
    """The routing-relevant part of a FlowRoute."""

    flow: str
    tag: str
    exclusive: bool
    versions: frozenset[int]
    split: Split = ()

    @property
    def weighted(self) -> bool:
        return bool(self.split)

    def to_spec(self) -> FlowRouteSpec:
        return FlowRouteSpec(
            flow=self.flow,
            tag=self.tag,
            exclusive=self.exclusive,
            versions=sorted(self.versions),
            split=weighted_versions(self.split) or None,
        )


def split_of(entries: Iterable[Mapping[str, Any]] | None) -> Split:
    """The `Split` of a route's `spec.split` as stored (a list of {version, weight})."""
    pairs = ((int(e["version"]), int(e["weight"])) for e in entries or () if "version" in e)
    return tuple(sorted(pairs))


def split_from(weights: Iterable[WeightedVersion]) -> Split:
    """The `Split` of a model's list of weighted versions."""
    return tuple(sorted((w.version, w.weight) for w in weights))


def weighted_versions(split: Split) -> list[WeightedVersion]:
    return [WeightedVersion(version=v, weight=w) for v, w in split]


def format_split(split: Split) -> str:
    """`2=90,3=10`: how the CLI takes and shows a split."""
    return ",".join(f"{v}={w}" for v, w in split)


def split_bucket(flow: str, key: str) -> int:
    """Where `key` falls in 0..BUCKETS-1 for `flow`'s split tags: a stable hash, so the
    same key lands in the same bucket in every process and after every restart."""
    digest = hashlib.sha256(f"{flow}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def split_reason(choice: SplitChoice) -> str:
    """Why a split tag chose its version, e.g. `split 2=90,3=10: bucket 37 by routing key`."""
    by = "routing key" if choice.sticky else "invocation name"
    return f"split {format_split(split_from(choice.split))}: bucket {choice.bucket} of 0-99 by {by}"


def pick_version(split: Split, bucket: int) -> int:
    """The version whose range of buckets holds `bucket`: versions take consecutive
    ranges by weight, in version order (0..89 → the first of a 90/10 split)."""
    upper = 0
    for version, weight in split:
        upper += weight
        if bucket < upper:
            return version
    return split[-1][0]  # weights add up to BUCKETS; unreachable for a valid split


class RouteLookup(Protocol):
    def has_deployments(self, flow: str) -> bool: ...
    def has_version(self, flow: str, version: int) -> bool: ...
    def route(self, flow: str, tag: str) -> RouteView | None: ...


class ResolutionError(Exception):
    """An invocation that cannot be resolved; `reason` is CamelCase, `message` says what to do.

    `flow`, `tag` and `version` name what was missing, so a caller can check whether the
    API server has it after all (see `CONVERGING`)."""

    reason = "ResolutionFailed"

    def __init__(
        self, message: str, flow: str = "", tag: str | None = None, version: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.flow, self.tag, self.version = flow, tag, version

    def __str__(self) -> str:
        return self.message


class NoDeployments(ResolutionError):
    reason = "NoDeployments"


class NoDefaultRoute(ResolutionError):
    reason = "NoDefaultRoute"


class TagNotFound(ResolutionError):
    reason = "TagNotFound"


class VersionNotFound(ResolutionError):
    reason = "VersionNotFound"


class AmbiguousTag(ResolutionError):
    reason = "AmbiguousTag"


class ConflictingSelectors(ResolutionError, ValueError):
    reason = "ConflictingSelectors"


# Errors that can be "not yet" rather than "no": the default route of a new flow is
# being created, or what the selector names exists but the caller's view lags behind.
# Ambiguous and conflicting selectors are final whatever happens next.
CONVERGING = (NoDeployments, NoDefaultRoute, TagNotFound, VersionNotFound)


@dataclass(frozen=True)
class Resolution:
    """What was asked for and the version it resolved to.

    `tag` is the tag asked for, `default` for the implicit route, None for a version.
    """

    selector: SelectorKind
    tag: str | None
    version: int
    split: SplitChoice | None = None


def format_versions(versions: Iterable[int]) -> str:
    return ", ".join(str(v) for v in sorted(versions))


def no_deployments(flow: str) -> NoDeployments:
    return NoDeployments(
        f"flow '{flow}' has no deployments yet; deploy it first with: "
        f"kitaru deploy path/to/file.py:{flow}",
        flow,
    )


def version_not_found(flow: str, version: int) -> VersionNotFound:
    return VersionNotFound(
        f"flow '{flow}' has no version {version}; list its versions with: "
        f"kitaru flow deployments list {flow}",
        flow,
        version=version,
    )


def tag_not_found(flow: str, tag: str) -> TagNotFound:
    return TagNotFound(
        f"flow '{flow}' has no tag '{tag}'; list its tags with: kitaru flow show {flow}, "
        f"or add it with: kitaru flow tag {flow} {tag} --version N",
        flow,
        tag,
    )


def resolve(
    lookup: RouteLookup,
    flow: str,
    tag: str | None = None,
    version: int | None = None,
    *,
    routing_key: str | None = None,
    invocation: str = "",
) -> Resolution:
    """Resolve an invocation: version ⇒ that version, tag ⇒ its one version (a split tag:
    one by weight, from the hash of `routing_key`, else of the `invocation`'s name),
    neither ⇒ default."""
    if tag is not None and version is not None:
        raise ConflictingSelectors(
            f"invoke flow '{flow}' with either a tag ({tag}) or a version ({version}), not both"
        )
    if not lookup.has_deployments(flow):
        raise no_deployments(flow)
    if version is not None:
        if not lookup.has_version(flow, version):
            raise version_not_found(flow, version)
        return Resolution(SelectorKind.VERSION, None, version)

    name = DEFAULT_TAG if tag is None else tag
    route = lookup.route(flow, name)
    if route is None or not route.versions:
        if name == DEFAULT_TAG:
            raise NoDefaultRoute(
                f"flow '{flow}' has deployments but none is routed as '{DEFAULT_TAG}'; "
                f"invoke with --tag or --version, or move {DEFAULT_TAG} with: "
                f"kitaru flow tag {flow} {DEFAULT_TAG} --version N --exclusive",
                flow,
                DEFAULT_TAG,
            )
        raise tag_not_found(flow, name)
    choice: SplitChoice | None = None
    if route.weighted:
        bucket = split_bucket(flow, routing_key if routing_key is not None else invocation)
        choice = SplitChoice(
            split=weighted_versions(route.split), bucket=bucket, sticky=routing_key is not None
        )
        resolved = pick_version(route.split, bucket)
    elif len(route.versions) > 1:
        raise AmbiguousTag(
            f"tag '{name}' of flow '{flow}' routes to versions "
            f"{format_versions(route.versions)}; invoke one of them with --version, make the "
            f"tag exclusive, or split it: kitaru flow tag {flow} {name} --split "
            + format_split(even_split(route.versions))
        )
    else:
        (resolved,) = route.versions
    if not lookup.has_version(flow, resolved):
        raise VersionNotFound(
            f"tag '{name}' of flow '{flow}' routes to version {resolved}, which no longer "
            f"exists; move the tag with: kitaru flow tag {flow} {name} --version N"
            + (" --exclusive" if route.exclusive else ""),
            flow,
            name,
            resolved,
        )
    selector = SelectorKind.DEFAULT if tag is None else SelectorKind.TAG
    return Resolution(selector, name, resolved, choice)


def even_split(versions: Iterable[int]) -> Split:
    """Weights as even as whole percents allow (the first versions take the remainder)."""
    ordered = sorted(versions)
    share, extra = divmod(BUCKETS, len(ordered))
    return tuple((v, share + (1 if i < extra else 0)) for i, v in enumerate(ordered))
