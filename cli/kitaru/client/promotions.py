"""Gated promotions: create, list and cancel FlowPromotions (the operator acts on them).

A new promotion is checked with the rules the operator applies (`kitaru.core.promotion`)
so that what would end NotPromoted at once is refused before anything is created: an
unknown flow or tag, a `--from` tag without exactly one version, another promotion
already waiting to move the same tag, a candidate whose input schema `--to`'s callers
would break (unless forced).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from kitaru.client.errors import Conflict, NotFound, ResolutionFailed
from kitaru.client.rules import core_errors, not_found, of_flow
from kitaru.client.tags import check_tag_move
from kitaru.core.manifests import route_view
from kitaru.core.models import FlowPromotionSpec
from kitaru.core.names import DEPLOYMENTS, ROUTES, route_name
from kitaru.core.promotion import (
    FINAL,
    PROMOTIONS,
    CandidateError,
    build_promotion,
    candidate_of,
    check_request,
    parse_window,
    pending_message,
)
from kitaru.core.routing import no_deployments

if TYPE_CHECKING:
    from kitaru.client.kube import Kube


@dataclass(frozen=True)
class PromotionInfo:
    """One FlowPromotion: its gate and what the operator measured."""

    name: str
    flow: str
    from_tag: str
    to_tag: str
    after_seconds: int
    min_runs: int
    min_success: float
    force: bool
    cancel_requested: bool
    phase: str | None
    phase_reason: str | None  # CamelCase: GateMet, GateFailed, CandidateMoved, ...
    message: str | None
    candidate_version: int | None
    runs: int
    succeeded: int
    failed: int
    success_rate: float | None
    window_ends_at: str | None
    promoted_at: str | None
    created: str | None
    reason: str | None = None  # why it was asked for: recorded in the route history

    @property
    def waiting(self) -> bool:
        return self.phase not in FINAL

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def promotion_info(obj: Mapping[str, Any]) -> PromotionInfo:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    return PromotionInfo(
        name=obj["metadata"]["name"],
        flow=spec.get("flow", ""),
        from_tag=spec.get("fromTag", ""),
        to_tag=spec.get("toTag", ""),
        after_seconds=int(spec.get("afterSeconds") or 0),
        min_runs=int(spec.get("minRuns") or 0),
        min_success=float(spec.get("minSuccess") or 0),
        force=bool(spec.get("force")),
        cancel_requested=bool(spec.get("cancelRequested")),
        phase=status.get("phase"),
        phase_reason=status.get("reason"),
        message=status.get("message"),
        candidate_version=status.get("candidateVersion"),
        runs=int(status.get("runs") or 0),
        succeeded=int(status.get("succeeded") or 0),
        failed=int(status.get("failed") or 0),
        success_rate=status.get("successRate"),
        window_ends_at=status.get("windowEndsAt"),
        promoted_at=status.get("promotedAt"),
        created=obj["metadata"].get("creationTimestamp"),
        reason=spec.get("reason"),
    )


def list_promotions(kube: Kube, flow: str, to_tag: str | None = None) -> list[PromotionInfo]:
    """The promotions of `flow` (of `to_tag` only), oldest first."""
    selector = of_flow(flow) + (f",spec.toTag={to_tag}" if to_tag else "")
    infos = [promotion_info(o) for o in kube.list(PROMOTIONS, field_selector=selector)]
    return sorted(infos, key=lambda p: (p.created or "", p.name))


def create_promotion(
    kube: Kube,
    flow: str,
    from_tag: str,
    to_tag: str,
    *,
    after: str | int | None,
    min_runs: int,
    min_success: float,
    force: bool,
    reason: str | None,
) -> PromotionInfo:
    with core_errors():
        check_request(flow, from_tag, to_tag, min_runs, min_success)
        after_seconds = parse_window(after)
    if not kube.exists(DEPLOYMENTS, field_selector=of_flow(flow)):
        raise not_found(no_deployments(flow))
    try:
        candidate = candidate_of(
            flow, from_tag, route_view(kube.get(ROUTES, route_name(flow, from_tag)))
        )
    except CandidateError as error:
        kind = NotFound if error.reason == "TagNotFound" else ResolutionFailed
        raise kind(str(error), kind=error.reason) from error
    pending = [
        p for p in list_promotions(kube, flow, to_tag) if p.waiting and not p.cancel_requested
    ]
    if pending:
        raise Conflict(pending_message(flow, to_tag, pending[0].name), kind="PromotionPending")
    target = route_view(kube.get(ROUTES, route_name(flow, to_tag)))
    if target is not None and candidate not in target.versions:
        check_tag_move(kube, flow, to_tag, candidate, target.versions, None, force=force)
    spec = FlowPromotionSpec(
        flow=flow,
        from_tag=from_tag,
        to_tag=to_tag,
        after_seconds=after_seconds,
        min_runs=min_runs,
        min_success=min_success,
        force=force,
        reason=reason or None,
    )
    return promotion_info(kube.create(PROMOTIONS, build_promotion(spec)))


def cancel_promotions(kube: Kube, flow: str, to_tag: str) -> list[PromotionInfo]:
    """Request the cancel of every waiting promotion of `flow`'s `to_tag`."""
    waiting = [p for p in list_promotions(kube, flow, to_tag) if p.waiting]
    if not waiting:
        if not kube.exists(DEPLOYMENTS, field_selector=of_flow(flow)):
            raise not_found(no_deployments(flow))
        raise NotFound(
            f"flow '{flow}' has no waiting promotion of tag '{to_tag}'; list its promotions "
            f"with: kitaru flow promotions {flow}",
            kind="PromotionNotFound",
        )
    return [
        promotion_info(kube.patch(PROMOTIONS, p.name, {"spec": {"cancelRequested": True}}))
        for p in waiting
    ]
