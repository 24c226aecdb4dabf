"""How long to wait before trying again: exponential backoff with jitter.

One schedule for every retry of the client and the operator. Pure: the caller passes
the random draw and does the waiting (the client sleeps, the operator sets a timer).
"""

from __future__ import annotations

from dataclasses import dataclass

_MAX_DOUBLINGS = 64  # beyond any cap; keeps 2**n a float


@dataclass(frozen=True)
class Backoff:
    """Waits that double from `base` up to `cap`; each is shortened by a random part
    of at most `jitter` of itself, so clients that failed together retry apart.
    `attempts` bounds the tries in all (None: no bound)."""

    base: float
    cap: float
    attempts: int | None = None
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise ValueError("backoff needs 0 < base <= cap")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter is a fraction (0 to 1)")
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("backoff needs at least one attempt")

    def delay(self, failures: int, draw: float) -> float:
        """The wait after `failures` failures in a row (>= 1); `draw` is uniform in [0, 1)."""
        if failures < 1:
            raise ValueError("a delay follows at least one failure")
        ceiling = min(self.cap, self.base * 2.0 ** min(failures - 1, _MAX_DOUBLINGS))
        return ceiling * (1 - self.jitter * draw)

    def exhausted(self, attempts: int) -> bool:
        """Whether `attempts` tries used the whole budget."""
        return self.attempts is not None and attempts >= self.attempts
