"""Route history: what each change of a route was, and what a tag routed to when.

Pure. The operator records (`record_change`) each route change it observes, so kubectl
and GitOps writes are recorded like the CLI's; the client answers "what did `stable`
route to at T" (`targets_at`) and computes a rollback (`rollback_target`). The history
of a flow is one FlowHistory object; its `routes` are each live route as last recorded
(what the next change's `from` is, also after an operator restart), its `changes` the
newest `limit` changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kitaru.core.models import (
    FlowHistorySpec,
    RecordedRoute,
    RouteChange,
    RouteChangeAction,
)
from kitaru.core.names import DEFAULT_TAG, GROUP_VERSION, LABEL_FLOW, flow_dns
from kitaru.core.routing import RouteView, format_versions, split_from, weighted_versions

HISTORIES = "flowhistories"
# Who and why, set by the client on its route writes. The admission policy
# kitaru-route-changed-by lets a stamp claim the route's current generation
# (`change-generation`) only as the signature of the write that made it, by the user who
# made it (`changed-by`), so a claim the history counts cannot be forged.
ANNOTATION_CHANGED_BY = "kitaru.dev/changed-by"
ANNOTATION_CHANGE_GENERATION = "kitaru.dev/change-generation"
ANNOTATION_REASON = "kitaru.dev/reason"
ROLLBACK_REASON = "rollback"
# The field manager of the Kitaru client's writes (its User-Agent): it always signs its
# route writes, so when the claim is stale the last writer was someone else.
CLIENT_FIELD_MANAGER = "kitaru"
DEFAULT_HISTORY_LIMIT = 100
REASON_MAX_LENGTH = 256
# Where a change's `by` came from (RouteChange.by_source): verified — the stamp admission
# checked against the requesting user, or the operator's own act (an expired tag); or
# inferred — the field manager in managedFields, a name the writer chose.
BY_ANNOTATION = "annotation"
BY_OPERATOR = "operator"
BY_FIELD_MANAGER = "managedFields"
VERIFIED_SOURCES = frozenset({BY_ANNOTATION, BY_OPERATOR})


class HistoryError(ValueError):
    """A history query or rollback that cannot be answered; the message says why."""

    reason = "HistoryError"


class NoPreviousTarget(HistoryError):
    reason = "NoPreviousTarget"


class HistoryTooShort(HistoryError):
    reason = "HistoryTooShort"


class HistoryNotCurrent(HistoryError):
    reason = "HistoryNotCurrent"


class InvalidTime(HistoryError):
    reason = "InvalidTime"


def history_name(flow: str) -> str:
    """The FlowHistory of a flow is named like the flow (with _ as -)."""
    return flow_dns(flow)


def format_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """RFC 3339 / ISO 8601; a time without a zone is UTC."""
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidTime(
            f"{text[:80]!r} is not a time: use ISO 8601, e.g. 2025-06-01T12:00:00Z"
        ) from exc
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def classify(before: RecordedRoute | None, after: RouteView | None) -> RouteChangeAction | None:
    """What kind of change `before` -> `after` is (None: no change)."""
    if after is None:
        return RouteChangeAction.DELETED if before is not None else None
    if before is None:
        return RouteChangeAction.CREATED
    old, new = set(before.versions), set(after.versions)
    if old == new:
        if before.exclusive != after.exclusive or bool(before.split) != after.weighted:
            return RouteChangeAction.MODE_CHANGED
        return RouteChangeAction.REWEIGHTED if split_from(before.split) != after.split else None
    if new > old:
        return RouteChangeAction.ADDED
    if new < old:
        return RouteChangeAction.REMOVED
    return RouteChangeAction.MOVED


@dataclass(frozen=True)
class Attribution:
    """Who made a change, when, and why, as read from the changed object."""

    at: str
    by: str = ""
    by_source: str = ""
    reason: str = ""
    generation: int | None = None


def attribution(
    metadata: Mapping[str, Any], observed_at: datetime, *, deleted: bool = False
) -> Attribution:
    """Who/when/why of the write that produced `metadata` (a FlowRoute's).

    The client's annotations count only when they claim this generation (a kubectl edit
    afterwards leaves them stale); otherwise the newest managedFields entry that owns
    part of the spec names the field manager (kubectl-edit, kustomize-controller...).
    A delete is attributed only by annotations a deleting client wrote just before it.
    """
    annotations = metadata.get("annotations") or {}
    generation = metadata.get("generation")
    claimed = annotations.get(ANNOTATION_CHANGE_GENERATION)
    fresh = claimed is not None and claimed == str(generation)
    newest = _route_writer(metadata.get("managedFields") or [], exclude_client=not fresh)
    at = format_time(observed_at) if deleted or newest is None else newest.get("time") or ""
    if fresh and annotations.get(ANNOTATION_CHANGED_BY):
        by, source = annotations[ANNOTATION_CHANGED_BY], BY_ANNOTATION
    elif newest is not None and not deleted:
        by, source = newest.get("manager") or "", BY_FIELD_MANAGER
    else:
        by, source = "", ""
    return Attribution(
        at=at or format_time(observed_at),
        by=by,
        by_source=source,
        reason=(annotations.get(ANNOTATION_REASON) or "")[:REASON_MAX_LENGTH] if fresh else "",
        generation=generation,
    )


def _route_writer(
    entries: list[Mapping[str, Any]], *, exclude_client: bool
) -> Mapping[str, Any] | None:
    """The managedFields entry of whoever last wrote the route's spec.

    Times are whole seconds and an unchanged field keeps its old owner, so the newest
    spec owner is ambiguous when two writers hit the same second. The Kitaru client
    signs every route write it makes; when the signature is stale (`exclude_client`),
    the last writer was not the client, so its entry is left out. Among equal times,
    an owner of spec.versions or spec.exclusive (what a route change is about) wins."""
    spec = [e for e in entries if "f:spec" in (e.get("fieldsV1") or {})]
    if exclude_client:
        spec = [e for e in spec if e.get("manager") != CLIENT_FIELD_MANAGER] or spec

    def routing(entry: Mapping[str, Any]) -> bool:
        owned = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        return bool({"f:versions", "f:exclusive"} & set(owned))

    return max(spec, key=lambda e: (e.get("time") or "", routing(e)), default=None)


def record_change(
    history: FlowHistorySpec,
    tag: str,
    after: RouteView | None,
    who: Attribution,
    limit: int = DEFAULT_HISTORY_LIMIT,
) -> RouteChange | None:
    """Append the change of `tag` to `after` (None: deleted) to `history`, in place;
    None when `after` is what the history already has (a repeated event, a restart)."""
    routes = {r.tag: r for r in history.routes}
    before = routes.get(tag)
    action = classify(before, after)
    if action is None:
        return None
    change = RouteChange(
        seq=history.next_seq,
        tag=tag,
        action=action,
        from_versions=list(before.versions) if before else [],
        to_versions=sorted(after.versions) if after else [],
        from_split=list(before.split) if before else [],
        to_split=weighted_versions(after.split) if after else [],
        exclusive=after.exclusive if after else bool(before and before.exclusive),
        at=who.at,
        by=who.by,
        by_source=who.by_source,
        reason=who.reason,
        generation=who.generation,
    )
    if after is None:
        routes.pop(tag, None)
    else:
        routes[tag] = RecordedRoute(
            tag=tag,
            exclusive=after.exclusive,
            versions=sorted(after.versions),
            split=weighted_versions(after.split),
        )
    history.routes = [routes[t] for t in sorted(routes)]
    history.changes = [*history.changes, change][-max(limit, 1) :]
    history.next_seq += 1
    return change


def by_verified(change: RouteChange) -> bool:
    """Whether the change's `by` was verified (admission-checked, or the operator's own)
    rather than inferred from a field manager the writer could name as it liked."""
    return bool(change.by) and change.by_source in VERIFIED_SOURCES


def change_record(change: RouteChange) -> dict[str, Any]:
    """A recorded change as every surface shows it: the wire form plus `byVerified`."""
    return {**change.wire(), "byVerified": by_verified(change)}


def shown_by(record: Mapping[str, Any]) -> str:
    """`alice (verified)`, `kubectl-patch (inferred)` or `?`: who, and how it is known."""
    if not record.get("by"):
        return "?"
    return f"{record['by']} ({'verified' if record.get('byVerified') else 'inferred'})"


def targets_at(history: FlowHistorySpec, at: datetime) -> dict[str, list[int]]:
    """Tag -> versions it routed to at `at` (tags without a route then are left out).

    A tag's state at `at` is the `to` of its last change at or before `at`, else the
    `from` of its first later change. Before the oldest retained change the answer is
    unknown: the older changes were dropped (or none was recorded yet).
    """
    changes = history.changes
    if not changes or at < parse_time(changes[0].at):
        since = f"since {changes[0].at}" if changes else "no change recorded yet"
        raise HistoryTooShort(
            f"the route history of flow '{history.flow}' does not reach back to "
            f"{format_time(at)} ({since})"
        )
    state: dict[str, list[int]] = {r.tag: list(r.versions) for r in history.routes}
    for change in reversed(changes):  # undo every change after `at`
        if parse_time(change.at) > at:
            state[change.tag] = list(change.from_versions)
    return {tag: versions for tag, versions in sorted(state.items()) if versions}


def rollback_target(history: FlowHistorySpec, tag: str, current: RouteView | None) -> RouteView:
    """The route `tag` had before its last recorded change: what rollback moves it to.

    Refused when the route is not what the history last recorded (a change the
    operator has not recorded yet), or when the last change created the route.
    """
    flow = history.flow
    recorded = next((r for r in history.routes if r.tag == tag), None)
    last = next((c for c in reversed(history.changes) if c.tag == tag), None)
    if current is not None and (
        recorded is None
        or set(recorded.versions) != current.versions
        or recorded.exclusive != current.exclusive
        or split_from(recorded.split) != current.split
    ):
        raise HistoryNotCurrent(
            f"tag '{tag}' of flow '{flow}' changed after the last recorded change "
            "(the operator records it in a moment, or is not running); try again"
        )
    if last is None:
        raise NoPreviousTarget(f"tag '{tag}' of flow '{flow}' has no recorded change to roll back")
    if not last.from_versions:
        raise NoPreviousTarget(
            f"tag '{tag}' of flow '{flow}' had no previous target: its last recorded change "
            f"(#{last.seq}) created it at {format_versions(last.to_versions)}"
        )
    split = split_from(last.from_split)
    if split:  # a split tag is never exclusive
        exclusive = False
    elif last.action == RouteChangeAction.MODE_CHANGED and not last.to_split:
        exclusive = not last.exclusive
    else:  # the mode before is not recorded; an exclusive route names one version
        exclusive = last.exclusive and len(last.from_versions) == 1
    exclusive = exclusive or tag == DEFAULT_TAG
    return RouteView(
        flow=flow,
        tag=tag,
        exclusive=exclusive,
        versions=frozenset(last.from_versions),
        split=split,
    )


def build_history(
    flow: str, history: FlowHistorySpec, current: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The FlowHistory object for `history`; from `current` it keeps metadata (CAS)."""
    spec = history.wire()
    if current is not None:
        body = dict(current)
        body["spec"] = spec
        body.pop("status", None)
        return body
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "FlowHistory",
        "metadata": {"name": history_name(flow), "labels": {LABEL_FLOW: flow}},
        "spec": spec,
    }


def parse_history(obj: Mapping[str, Any] | None, flow: str) -> FlowHistorySpec:
    """The history in a FlowHistory object (an empty one when there is none yet)."""
    if obj is None:
        return FlowHistorySpec(flow=flow)
    return FlowHistorySpec.model_validate(obj.get("spec") or {})
