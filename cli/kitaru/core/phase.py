"""The phase of a FlowInvocation, apart from the models so that what needs only the
phase names (the CLI's `--status` choices) does not load pydantic."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    QUEUED = "Queued"  # waiting for a slot under a concurrency limit; no Job yet
    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def finished(self) -> bool:
        return self in (Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED)
