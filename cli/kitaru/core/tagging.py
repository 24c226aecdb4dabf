"""Tag semantics: add, move and remove a tag on a route (pure; the client does the CAS)."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from kitaru.core.models import TagRef
from kitaru.core.names import DEFAULT_TAG, validate_flow, validate_tag, validate_version
from kitaru.core.routing import RouteView, format_versions


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

    Exclusive moves the tag to `version`; shared adds `version` to the set. The mode
    follows the latest command, except that `default` is always exclusive.
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
    the tag comes off its only version; a tag on several needs one."""
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
        TagRef(tag=route.tag, exclusive=route.exclusive)
        for route in routes
        if version in route.versions
    ]
    return sorted(refs, key=lambda ref: (ref.tag != DEFAULT_TAG, ref.tag))
