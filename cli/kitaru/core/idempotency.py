"""Idempotency keys: the same key for the same flow starts one execution.

The key decides the FlowInvocation's *name* (`idempotent_name`), so the API server's
name uniqueness is what deduplicates: two concurrent invokes with one key cannot both
create, whichever client or process sends them, and nothing depends on the operator.
The loser of the race (409 AlreadyExists) reads the winner and decides here what the
request gets (`on_conflict`): the same execution, an error naming the key, or — once the
window is over and the earlier run has finished — a fresh execution in its place.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from kitaru.core.names import InvalidName, flow_dns, shown

IDEMPOTENCY_KEY_MAX_LENGTH = 256
# Printable ASCII without spaces: UUIDs, request ids, "order-42/retry" all fit, and the
# key can be shown in an error or a header without quoting surprises.
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]+$"
IDEMPOTENCY_WINDOW = timedelta(hours=24)
_KEY_RE = re.compile(IDEMPOTENCY_KEY_PATTERN)
_PREFIX_MAX = 40  # + "-i" + 20 hex digits = at most 62 characters: a valid Job name


class IdempotencyKeyReused(ValueError):
    """The key already names an execution of the flow with another request."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def validate_idempotency_key(key: str) -> str:
    if not (
        isinstance(key, str)
        and 0 < len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH
        and _KEY_RE.fullmatch(key)
    ):
        raise InvalidName(
            f"invalid idempotency key {shown(key)}: use 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} "
            "printable ASCII characters without spaces (a UUID or a request id)"
        )
    return key


def idempotent_name(flow: str, key: str) -> str:
    """The FlowInvocation name of (flow, key): `<flow-dns>-i<hash>`, deterministic, a valid
    DNS label. The hash covers the whole flow name, so cutting a long prefix is safe."""
    digest = hashlib.sha256(f"{flow}\0{key}".encode()).hexdigest()[:20]
    prefix = flow_dns(flow)[:_PREFIX_MAX].rstrip("-")
    return f"{prefix}-i{digest}"


@dataclass(frozen=True)
class Request:
    """What an invocation asked for: the part a repeated request must match."""

    flow: str
    tag: str | None
    version: int | None
    inputs: Mapping[str, Any]

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> Request:
        """From a FlowInvocation spec on the wire (camelCase)."""
        return cls(spec["flow"], spec.get("tag"), spec.get("version"), spec.get("inputs") or {})

    def describe(self) -> str:
        selector = (
            f"tag {self.tag}" if self.tag else f"version {self.version}" if self.version else ""
        )
        return ", ".join(filter(None, [selector or "tag default", f"inputs {dict(self.inputs)}"]))


class Conflict(StrEnum):
    """What a create that hit an existing invocation of the key's name gets."""

    SAME = "same"  # the same request: that execution is the answer
    REPLACE = "replace"  # an expired, finished run: delete it, create again


def on_conflict(
    key: str,
    requested: Request,
    existing_spec: Mapping[str, Any],
    created_at: datetime,
    finished: bool,
    now: datetime,
    window: timedelta = IDEMPOTENCY_WINDOW,
) -> Conflict:
    """Decide for a request whose key's name is taken; `IdempotencyKeyReused` if the key
    names another request within its window (or one still running after it)."""
    if finished and now - created_at >= window:
        return Conflict.REPLACE
    found = Request.of(existing_spec)
    if existing_spec.get("idempotencyKey") == key and found == requested:
        return Conflict.SAME
    if existing_spec.get("idempotencyKey") != key:
        raise IdempotencyKeyReused(
            f"the name derived from idempotency key {shown(key)} is taken by an invocation "
            "without that key (created with kubectl?): use another key"
        )
    hours = window.total_seconds() / 3600
    raise IdempotencyKeyReused(
        f"idempotency key {shown(key)} of flow '{requested.flow}' was used within "
        f"{hours:g}h with a different request ({found.describe()}); this request has "
        f"{requested.describe()}: use a new key, or repeat the original request"
    )
