"""Shadow runs: a route mirrors a fraction of its invocations to a candidate version.

Pure. The operator decides at dispatch whether an invocation is mirrored (`mirrors`,
by the hash of its name, so a restarted operator decides the same), starts the shadow
run (`build_shadow_invocation`: same inputs, a deterministic name, owned by the
primary) and sums up how the finished pairs compare (`summarize`); the client shows
one pair side by side (`compare`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kitaru.core.models import FlowInvocationSpec, Phase, ShadowSpec, ShadowSummary
from kitaru.core.names import GROUP_VERSION, LABEL_FLOW
from kitaru.core.routing import RouteView, format_versions, tag_not_found
from kitaru.core.tagging import TagError

LABEL_SHADOW_OF = "kitaru.dev/shadow-of"
SHADOW_SUFFIX = "-shadow"
FRACTION_BUCKETS = 10_000
# An invocation name has at most 63 characters (it names the Job).
_NAME_MAX = 63


def shadow_name(primary: str) -> str:
    """The shadow run of `primary` is named after it: one per primary, whoever asks."""
    return primary[: _NAME_MAX - len(SHADOW_SUFFIX)] + SHADOW_SUFFIX


def mirrors(flow: str, invocation: str, fraction: float) -> bool:
    """Whether the invocation named `invocation` falls in the mirrored `fraction`."""
    digest = hashlib.sha256(f"{flow}\0shadow\0{invocation}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % FRACTION_BUCKETS < round(fraction * FRACTION_BUCKETS)


def build_shadow_invocation(
    primary: Mapping[str, Any],
    spec: FlowInvocationSpec,
    version: int,
    inputs: Mapping[str, Any],
) -> dict[str, Any]:
    """The shadow FlowInvocation of `primary` (its object): `version` with the primary's
    merged `inputs` and retention, owned by the primary so it goes with it."""
    meta = primary["metadata"]
    shadow = FlowInvocationSpec(
        flow=spec.flow,
        version=version,
        inputs=dict(inputs),
        ttl_seconds_after_finished=spec.ttl_seconds_after_finished,
        history_limit=spec.history_limit,
        active_deadline_seconds=spec.active_deadline_seconds,
        shadow_of=meta["name"],
    )
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "FlowInvocation",
        "metadata": {
            "name": shadow_name(meta["name"]),
            "labels": {LABEL_FLOW: spec.flow, LABEL_SHADOW_OF: meta["name"]},
            "ownerReferences": [
                {
                    "apiVersion": GROUP_VERSION,
                    "kind": "FlowInvocation",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": False,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": {k: v for k, v in shadow.wire().items() if k != "cancelRequested"},
    }


def result_digest(result: Any) -> str:
    """A short hash of a result's canonical JSON: equal results, equal digests."""
    text = json.dumps(result, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What a pair comparison needs of a finished run."""

    phase: str
    digest: str | None  # of the result, when Completed


def agree(primary: RunOutcome, shadow: RunOutcome) -> bool:
    """Both finished the same way and, when completed, returned the same result."""
    if primary.phase != shadow.phase:
        return False
    return primary.phase != Phase.COMPLETED.value or primary.digest == shadow.digest


def summarize(version: int, pairs: Iterable[tuple[RunOutcome, RunOutcome]]) -> ShadowSummary:
    compared = agreed = 0
    for primary, shadow in pairs:
        compared += 1
        agreed += agree(primary, shadow)
    return ShadowSummary(
        version=version,
        compared=compared,
        agreed=agreed,
        agreement_rate=round(agreed / compared, 4) if compared else None,
    )


def result_diff(primary: Any, shadow: Any) -> list[str]:
    """A unified diff of the two results as indented JSON (empty: the same)."""
    if result_digest(primary) == result_digest(shadow):
        return []
    old, new = (
        json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
        for value in (primary, shadow)
    )
    return list(difflib.unified_diff(old, new, "primary", "shadow", lineterm=""))


class InvalidShadow(TagError):
    """A shadow the rules forbid; the message says what to pass instead."""

    reason = "InvalidShadow"


def shadow_spec(
    route: RouteView | None, flow: str, tag: str, version: int, fraction: float
) -> ShadowSpec:
    """The shadow of `kitaru flow shadow FLOW TAG --version N --fraction F` on `route`."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
        raise InvalidShadow(
            f"--fraction is a number above 0 and at most 1 (0.2: one run in five); got {fraction!r}"
        )
    if route is None:
        raise tag_not_found(flow, tag)
    if version in route.versions:
        raise InvalidShadow(
            f"tag '{tag}' of flow '{flow}' already routes to version {version} (it routes to "
            f"{format_versions(route.versions)}): a shadow runs a candidate the tag does not "
            "route to"
        )
    return ShadowSpec(version=version, fraction=float(fraction))
