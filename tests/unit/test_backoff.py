"""The one retry schedule (`kitaru.core.backoff`) and the client's loop over it."""

from __future__ import annotations

import pytest
from kitaru.client.retry import CONFLICTS, attempts
from kitaru.core.backoff import Backoff


@pytest.mark.parametrize(
    ("failures", "draw", "expected"),
    [
        (1, 0.0, 0.5),
        (2, 0.0, 1.0),
        (3, 0.0, 2.0),
        (6, 0.0, 16.0),
        (7, 0.0, 30.0),  # capped
        (10_000, 0.0, 30.0),  # no overflow however long it failed
        (1, 0.5, 0.375),  # jitter takes up to half off
        (7, 0.999, 30.0 * (1 - 0.5 * 0.999)),
    ],
)
def test_delay_doubles_to_the_cap_less_jitter(failures: int, draw: float, expected: float) -> None:
    assert Backoff(base=0.5, cap=30).delay(failures, draw) == pytest.approx(expected)


def test_without_jitter_the_delay_is_exact() -> None:
    policy = Backoff(base=1, cap=4, jitter=0)
    assert [policy.delay(n, 0.9) for n in (1, 2, 3, 4)] == [1, 2, 4, 4]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": 0, "cap": 1},
        {"base": 2, "cap": 1},
        {"base": 1, "cap": 1, "jitter": 1.5},
        {"base": 1, "cap": 1, "attempts": 0},
    ],
)
def test_invalid_policies_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_a_delay_follows_a_failure() -> None:
    with pytest.raises(ValueError):
        Backoff(base=1, cap=1).delay(0, 0.0)


def test_attempts_wait_between_tries_and_stop_at_the_budget() -> None:
    slept: list[float] = []
    policy = Backoff(base=0.1, cap=0.3, attempts=4, jitter=0)
    tried = list(attempts(policy, sleep=slept.append, draw=lambda: 0.0))
    assert tried == [1, 2, 3, 4]
    assert slept == pytest.approx([0.1, 0.2, 0.3])  # none before the first, none after the last


def test_attempts_do_not_wait_once_the_caller_succeeds() -> None:
    slept: list[float] = []
    for attempt in attempts(CONFLICTS, sleep=slept.append, draw=lambda: 0.5):
        if attempt == 2:
            break
    assert slept == [pytest.approx(CONFLICTS.delay(1, 0.5))]


def test_the_conflict_budget_outlasts_twenty_concurrent_deploys_within_seconds() -> None:
    assert CONFLICTS.attempts is not None and CONFLICTS.attempts >= 20
    worst = sum(CONFLICTS.delay(n, 0.0) for n in range(1, CONFLICTS.attempts))
    assert worst < 15
