"""Tag semantics: add, move and remove a tag on a route (pure; the client does the CAS)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from kitaru.core.models import TagRef
from kitaru.core.names import DEFAULT_TAG, validate_flow, validate_tag, validate_version
from kitaru.core.routing import (
    BUCKETS,
    RouteView,
    Split,
    even_split,
    format_split,
    format_versions,
)

MAX_SPLIT = 16
SPLIT_EXAMPLE = "2=90,3=10"


class TagError(ValueError):
    """A tag command that the rules forbid; the message says what to do instead."""

    reason = "TagError"


class AmbiguousUntag(TagError):
    """Untag without a version, of a tag that routes to several."""

    reason = "AmbiguousTag"


def apply_tag(
    current: RouteView | None, flow: str, tag: str, version: int, exclusive: bool
) -> RouteView:
    """The route after `kitaru flow tag FLOW TAG --version N [--exclusive]`.

    Exclusive moves the tag to `version`; shared adds `version` to the set (a split tag
    becomes shared over its versions and `version`). The mode follows the latest command,
    except that `default` is always exclusive.
    """
    validate_flow(flow)
    validate_tag(tag)
    validate_version(version)
    if current is not None and (current.flow, current.tag) != (flow, tag):
        raise ValueError(f"route {current.flow}.{current.tag} is not {flow}.{tag}")
    exclusive = exclusive or tag == DEFAULT_TAG
    if exclusive or current is None:
        versions = frozenset({version})
    else:
        versions = current.versions | {version}
    return RouteView(flow, tag, exclusive, versions)


class InvalidSplit(TagError):
    """A split that the rules forbid; the message says what to pass instead."""

    reason = "InvalidSplit"


def parse_split(text: str) -> dict[int, int]:
    """`2=90,3=10` → {2: 90, 3: 10}: the CLI's --split."""
    weights: dict[int, int] = {}
    for part in text.split(","):
        version, sep, weight = part.strip().partition("=")
        if not sep or not version.strip().isdigit() or not weight.strip().isdigit():
            raise InvalidSplit(
                f"--split takes VERSION=WEIGHT pairs separated by commas, e.g. {SPLIT_EXAMPLE}; "
                f"got {part.strip()[:40]!r}"
            )
        if int(version) in weights:
            raise InvalidSplit(f"--split names version {int(version)} twice")
        weights[int(version)] = int(weight)
    return weights


def split_tag(
    current: RouteView | None, flow: str, tag: str, weights: Mapping[int, int]
) -> RouteView:
    """The route after `kitaru flow tag FLOW TAG --split 2=90,3=10`: the tag routes to
    exactly the versions named, each invocation to one of them by weight (percent)."""
    validate_flow(flow)
    validate_tag(tag)
    if current is not None and (current.flow, current.tag) != (flow, tag):
        raise ValueError(f"route {current.flow}.{current.tag} is not {flow}.{tag}")
    if tag == DEFAULT_TAG:
        raise InvalidSplit(
            f"the '{DEFAULT_TAG}' tag cannot be split: split another tag, e.g. "
            f"kitaru flow tag {flow} stable --split {SPLIT_EXAMPLE}, and invoke it with --tag"
        )
    if not 2 <= len(weights) <= MAX_SPLIT:
        raise InvalidSplit(
            f"a split names 2 to {MAX_SPLIT} versions, e.g. --split {SPLIT_EXAMPLE}; "
            f"to route tag '{tag}' to one version use --version N --exclusive"
        )
    for version, weight in weights.items():
        validate_version(version)
        if not 0 <= weight <= BUCKETS:
            raise InvalidSplit(f"the weight of version {version} is {weight}: use 0 to 100")
    split: Split = tuple(sorted(weights.items()))
    total = sum(weights.values())
    if total != BUCKETS:
        raise InvalidSplit(
            f"the weights of a split add up to 100; {format_split(split)} adds up to {total}"
        )
    return RouteView(flow, tag, False, frozenset(weights), split)


def bootstrap_default(
    flow: str, versions: Collection[int], new: Collection[int], has_default: bool
) -> RouteView | None:
    """The first deployment of a flow gets `default`, whatever surface created it.

    A version new to the caller (just created by the client; not yet reconciled by the
    operator) in a flow without a `default` route bootstraps one: exclusive, on the
    flow's lowest version of `versions`. None when there is nothing to bootstrap. Only a
    new version counts, so the versions of a flow being deleted on purpose (its routes
    go too) never bring `default` back.
    """
    if has_default or not new:
        return None
    return apply_tag(None, flow, DEFAULT_TAG, min(versions), True)


def remove_tag(current: RouteView, version: int | None) -> RouteView | None:
    """The route after `kitaru flow untag` (None: delete the route). Without a version,
    the tag comes off its only version (a split tag: off all of them); a shared tag on
    several needs one."""
    if current.weighted:
        if version is None:
            return None  # the whole split tag goes
        rest = sorted(current.versions - {version})
        instead = (
            f"--version {rest[0]} --exclusive"
            if len(rest) == 1
            else "--split " + format_split(even_split(rest))
        )
        raise InvalidSplit(
            f"tag '{current.tag}' of flow '{current.flow}' is split "
            f"({format_split(current.split)}); taking version {version} out would leave weights "
            f"that do not add up to 100: route it anew, e.g. kitaru flow tag {current.flow} "
            f"{current.tag} {instead}, or remove the whole tag without --version"
        )
    if current.tag == DEFAULT_TAG:
        raise TagError(
            f"the '{DEFAULT_TAG}' tag of flow '{current.flow}' cannot be removed, only moved: "
            f"kitaru flow tag {current.flow} {DEFAULT_TAG} --version N --exclusive"
        )
    if version is None:
        if len(current.versions) > 1:
            raise AmbiguousUntag(
                f"tag '{current.tag}' of flow '{current.flow}' routes to versions "
                f"{format_versions(current.versions)}; pass --version"
            )
        version = min(current.versions)
    if version not in current.versions:
        raise TagError(
            f"tag '{current.tag}' of flow '{current.flow}' does not route to version {version} "
            f"(it routes to {format_versions(current.versions)})"
        )
    remaining = current.versions - {version}
    if not remaining:
        return None
    return RouteView(current.flow, current.tag, current.exclusive, remaining)


def tags_for_version(routes: Iterable[RouteView], version: int) -> list[TagRef]:
    """The tags routed to `version`, `default` first, then by name."""
    refs = [
        TagRef(tag=route.tag, exclusive=route.exclusive, weight=dict(route.split).get(version))
        for route in routes
        if version in route.versions
    ]
    return sorted(refs, key=lambda ref: (ref.tag != DEFAULT_TAG, ref.tag))
