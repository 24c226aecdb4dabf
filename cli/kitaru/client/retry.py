"""The client's one retry loop: attempts with backoff and jitter (`kitaru.core.backoff`).

    for _ in attempts():
        current = read()
        try:
            return write(change(current))  # compare-and-swap on resourceVersion
        except StaleObject:
            continue
    raise Conflict(...)

The first attempt starts at once; each next one after the policy's delay. When the
budget is spent the loop ends, and the caller says what kept changing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator

from kitaru.core.backoff import Backoff

# Compare-and-swap on one object, and version allocation (one conflict per concurrent
# deploy that took a number): starts at 10 ms, at most 0.4 s, about 10 s in all.
CONFLICTS = Backoff(base=0.01, cap=0.4, attempts=30)


def attempts(
    policy: Backoff = CONFLICTS,
    *,
    sleep: Callable[[float], None] = time.sleep,
    draw: Callable[[], float] = random.random,
) -> Iterator[int]:
    """Attempt numbers from 1, waiting before each one but the first, until the policy's
    budget is spent."""
    attempt = 1
    while True:
        yield attempt
        if policy.exhausted(attempt):
            return
        sleep(policy.delay(attempt, draw()))
        attempt += 1
