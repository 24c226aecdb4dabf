"""Gated promotion: move `toTag` to the version `fromTag` routes to once that version's
runs meet the gate (a window, a number of finished runs, a success rate).

Pure. The operator feeds `evaluate` what it holds in memory (the two routes, the
candidate's tally of finished runs, input schemas) and writes what it returns: the
promotion's status, and the route to write when the gate is met. The client checks a
new promotion with the same rules (`check_request`, `candidate_of`) before creating it.

Semantics (docs/ARCHITECTURE.md):
- the candidate is the single version `fromTag` routes to when the operator first sees
  the promotion, then frozen; if `fromTag` moves away from it, the promotion ends
  NotPromoted (CandidateMoved): what was measured is no longer what would be promoted;
- runs counted: finished invocations of the flow that resolved to the candidate and
  were created at or after the promotion (any selector); Completed succeeded, Failed
  failed, Cancelled not counted;
- the gate is decided once, when both the window has passed and `minRuns` runs have
  finished: success rate >= `minSuccess` moves `toTag` (exclusive), else NotPromoted
  (GateFailed). With `minRuns` 0 and no run, the rate gate is vacuous: time alone;
- Promoted, NotPromoted and Cancelled are final.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kitaru.core.compat import incompatibility_message, route_incompatibilities
from kitaru.core.conditions import rfc3339, set_condition
from kitaru.core.expiry import duration_seconds
from kitaru.core.history import REASON_MAX_LENGTH
from kitaru.core.models import (
    ConditionStatus,
    FlowPromotionSpec,
    FlowPromotionStatus,
    PromotionPhase,
)
from kitaru.core.names import (
    GROUP_VERSION,
    PROMOTION_MAX_AFTER_SECONDS,
    flow_dns,
    validate_flow,
    validate_tag,
)
from kitaru.core.routing import RouteView, format_versions, tag_not_found
from kitaru.core.tagging import TagError

PROMOTIONS = "flowpromotions"
PROMOTED = "Promoted"  # the condition type
FINAL = frozenset({PromotionPhase.PROMOTED, PromotionPhase.NOT_PROMOTED, PromotionPhase.CANCELLED})
FORCE_REMEDY = "Keep the tag where it is, or promote anyway with --force (SDK and MCP: force=True)"


class InvalidPromotion(TagError):
    """A promotion request the rules refuse before anything is created."""

    reason = "InvalidPromotion"


class CandidateError(TagError):
    """`fromTag` does not name exactly one version (TagNotFound, AmbiguousTag)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_request(flow: str, from_tag: str, to_tag: str, min_runs: int, min_success: float) -> None:
    """The same-object rules of a promotion (CEL holds them for kubectl too)."""
    validate_flow(flow)
    validate_tag(from_tag)
    validate_tag(to_tag)
    if from_tag == to_tag:
        raise InvalidPromotion(
            f"--from and --to are both '{from_tag}': a promotion moves the --to tag to the "
            "version the --from tag routes to (e.g. --from canary --to stable)"
        )
    if isinstance(min_runs, bool) or not isinstance(min_runs, int) or min_runs < 0:
        raise InvalidPromotion(f"min runs {min_runs!r} must be a whole number >= 0")
    if isinstance(min_success, bool) or not (
        isinstance(min_success, int | float) and 0 <= min_success <= 1
    ):
        raise InvalidPromotion(
            f"min success {min_success!r} must be a fraction between 0 and 1 (e.g. 0.95)"
        )


def parse_window(after: str | int | None) -> int:
    """`--after 1h` as seconds: a duration like `kitaru flow tag --expires` takes
    (30m, 12h, 7d), or 0 / None for no window; an int is taken as seconds."""
    if after is None:
        return 0
    if isinstance(after, int) and not isinstance(after, bool):
        seconds = after
    elif isinstance(after, str) and after.strip() == "0":
        seconds = 0
    else:
        parsed = duration_seconds(str(after))
        if parsed is None:
            raise InvalidPromotion(
                f"window {str(after)[:40]!r} is not a duration: use 0 or a whole number and "
                "a unit (s, m, h, d or w), e.g. 30m, 1h or 7d"
            )
        seconds = parsed
    if not 0 <= seconds <= PROMOTION_MAX_AFTER_SECONDS:
        raise InvalidPromotion(
            f"window of {seconds} seconds must be between 0 and a year "
            f"({PROMOTION_MAX_AFTER_SECONDS} seconds)"
        )
    return seconds


def build_promotion(spec: FlowPromotionSpec) -> dict[str, Any]:
    """A new FlowPromotion, named by the API server after its flow and toTag."""
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "FlowPromotion",
        "metadata": {"generateName": f"{flow_dns(spec.flow)}.{spec.to_tag}-"},
        "spec": spec.wire(),
    }


def candidate_of(flow: str, from_tag: str, route: RouteView | None) -> int:
    """The one version `from_tag` routes to; CandidateError otherwise."""
    if route is None or not route.versions:
        error = tag_not_found(flow, from_tag)
        raise CandidateError(error.message, error.reason)
    if len(route.versions) > 1:
        raise CandidateError(
            f"tag '{from_tag}' of flow '{flow}' routes to versions "
            f"{format_versions(route.versions)}: a promotion needs one candidate version; "
            f"make the tag exclusive first (kitaru flow tag {flow} {from_tag} --version N "
            "--exclusive)",
            "AmbiguousTag",
        )
    (version,) = route.versions
    return version


def pending_message(flow: str, to_tag: str, other: str) -> str:
    return (
        f"promotion {other} already waits to move tag '{to_tag}' of flow '{flow}': wait for "
        f"it, or cancel it first with: kitaru flow promote {flow} --to {to_tag} --cancel"
    )


@dataclass(frozen=True)
class Tally:
    """The candidate's finished runs counted so far."""

    succeeded: int = 0
    failed: int = 0

    @property
    def runs(self) -> int:
        return self.succeeded + self.failed

    def at_least(self, status: FlowPromotionStatus | None) -> Tally:
        """Never fewer than the status recorded: runs deleted by retention since they
        were counted (or before an operator restart recounted them) still count."""
        if status is None:
            return self
        return Tally(max(self.succeeded, status.succeeded), max(self.failed, status.failed))


@dataclass(frozen=True)
class Decision:
    status: FlowPromotionStatus
    # The route `toTag` should become (exclusive, the candidate), when it must be written.
    move: RouteView | None = None
    # Why, for the route history (kitaru.dev/reason on the route write).
    history_reason: str = ""

    @property
    def final(self) -> bool:
        return self.status.phase in FINAL


def evaluate(
    name: str,
    spec: FlowPromotionSpec,
    created: datetime,
    now: datetime,
    previous: FlowPromotionStatus | None,
    from_route: RouteView | None,
    to_route: RouteView | None,
    tally: Tally,
    schemas: Mapping[int, Mapping[str, Any] | None],
    generation: int | None,
    pending_before: str | None = None,
) -> Decision:
    """The promotion's next status, and the route write that the gate asks for.

    `schemas`: input schemas of the candidate and of toTag's current versions (those that
    exist); `pending_before`: the name of an older promotion of the same flow and toTag
    that is still waiting (the older one goes first; this one ends NotPromoted)."""
    if previous is not None and previous.phase in FINAL:
        return Decision(previous)
    window_ends = created + timedelta(seconds=spec.after_seconds)
    base = FlowPromotionStatus.model_validate(
        {
            **(previous.model_dump() if previous is not None else {}),
            "window_ends_at": rfc3339(window_ends),
            "observed_generation": generation,
        }
    )

    def ended(phase: PromotionPhase, reason: str, message: str) -> Decision:
        return Decision(_with(base, phase, reason, message, now, generation))

    if spec.cancel_requested:
        return ended(PromotionPhase.CANCELLED, "Cancelled", f"cancelled; {spec.to_tag} not moved")
    if pending_before is not None:
        return ended(
            PromotionPhase.NOT_PROMOTED,
            "AnotherPromotionPending",
            pending_message(spec.flow, spec.to_tag, pending_before),
        )
    candidate = base.candidate_version
    if candidate is None:
        try:
            candidate = candidate_of(spec.flow, spec.from_tag, from_route)
        except CandidateError as error:
            return ended(PromotionPhase.NOT_PROMOTED, error.reason, str(error))
        base.candidate_version = candidate
    elif from_route is None or from_route.versions != {candidate}:
        now_at = format_versions(from_route.versions) if from_route else "nothing (deleted)"
        return ended(
            PromotionPhase.NOT_PROMOTED,
            "CandidateMoved",
            f"tag '{spec.from_tag}' moved from version {candidate} to {now_at} during the "
            f"window: what was measured is no longer what it routes to; {spec.to_tag} not moved",
        )

    tally = tally.at_least(previous)
    base.runs, base.succeeded, base.failed = tally.runs, tally.succeeded, tally.failed
    base.success_rate = round(tally.succeeded / tally.runs, 4) if tally.runs else None
    waiting_for = max(0, spec.min_runs - tally.runs)
    if waiting_for or now < window_ends:
        parts = [f"{tally.runs} of {spec.min_runs} runs of version {candidate} finished"]
        if tally.runs:
            parts[0] += f" ({tally.succeeded} completed, {tally.failed} failed)"
        if now < window_ends:
            parts.append(f"the window ends at {rfc3339(window_ends)}")
        return Decision(
            _with(base, PromotionPhase.WAITING, "Waiting", "; ".join(parts), now, generation)
        )

    rate = tally.succeeded / tally.runs if tally.runs else 1.0
    measured = (
        f"{tally.runs} runs, {tally.succeeded} completed, {tally.failed} failed, success {rate:.2f}"
    )
    if rate < spec.min_success:
        return ended(
            PromotionPhase.NOT_PROMOTED,
            "GateFailed",
            f"success {rate:.2f} < {spec.min_success:.2f} after {tally.runs} runs of version "
            f"{candidate} ({tally.succeeded} completed, {tally.failed} failed); "
            f"{spec.to_tag} not moved",
        )
    current = to_route.versions if to_route is not None else frozenset()
    if not spec.force and current and candidate not in current:
        findings = route_incompatibilities(
            {v: schemas.get(v) for v in current if v in schemas}, candidate, schemas.get(candidate)
        )
        if findings:
            return ended(
                PromotionPhase.NOT_PROMOTED,
                "IncompatibleSchema",
                incompatibility_message(
                    spec.flow, spec.to_tag, candidate, sorted(current), findings, FORCE_REMEDY
                ),
            )
    base.previous_versions = sorted(current)
    base.promoted_at = rfc3339(now)
    done = _with(
        base,
        PromotionPhase.PROMOTED,
        "GateMet",
        f"moved {spec.to_tag} to version {candidate}"
        + (f" (from {format_versions(current)})" if current else "")
        + f": {measured} >= {spec.min_success:.2f}",
        now,
        generation,
    )
    target = RouteView(spec.flow, spec.to_tag, True, frozenset({candidate}))
    if to_route is not None and to_route.exclusive and to_route.versions == target.versions:
        return Decision(done)  # already there (e.g. moved before a restart)
    history = f"promotion {name}: {measured} >= {spec.min_success:.2f}"
    if spec.reason:
        history += f"; {spec.reason}"
    return Decision(done, target, history[:REASON_MAX_LENGTH])


def _with(
    status: FlowPromotionStatus,
    phase: PromotionPhase,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> FlowPromotionStatus:
    condition = {
        PromotionPhase.WAITING: ConditionStatus.UNKNOWN,
        PromotionPhase.PROMOTED: ConditionStatus.TRUE,
    }.get(phase, ConditionStatus.FALSE)
    return status.model_copy(
        update={
            "phase": phase,
            "reason": reason,
            "message": message,
            "conditions": set_condition(
                status.conditions, PROMOTED, condition, reason, message, now, generation
            ),
        }
    )
