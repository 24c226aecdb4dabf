from datetime import UTC, datetime, timedelta, timezone

import pytest
from kitaru.core.conditions import get_condition, is_true, rfc3339, set_condition
from kitaru.core.models import Condition, ConditionStatus

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
T1 = T0 + timedelta(minutes=1)


def ready(status: str, when: datetime = T0, reason: str = "R") -> Condition:
    return Condition(
        type="Ready", status=status, reason=reason, message="", last_transition_time=rfc3339(when)
    )


def test_adds_a_new_condition() -> None:
    (condition,) = set_condition([], "Ready", True, "Runnable", "ok", T0, 4)
    assert condition == Condition(
        type="Ready",
        status=ConditionStatus.TRUE,
        reason="Runnable",
        message="ok",
        last_transition_time="2025-01-02T03:04:05Z",
        observed_generation=4,
    )


@pytest.mark.parametrize(
    ("old", "new", "transition"),
    [
        ("True", "True", T0),
        ("False", "False", T0),
        ("True", "False", T1),
        ("False", "True", T1),
        ("Unknown", "True", T1),
    ],
)
def test_transition_time_changes_only_with_status(old: str, new: str, transition: datetime) -> None:
    (condition,) = set_condition([ready(old)], "Ready", new, "Other", "m", T1, 2)
    assert condition.last_transition_time == rfc3339(transition)
    assert (condition.reason, condition.message, condition.observed_generation) == ("Other", "m", 2)


def test_other_conditions_keep_their_place() -> None:
    resolved = Condition(type="Resolved", status="True", reason="R", last_transition_time="t")
    result = set_condition([resolved, ready("False")], "Ready", "True", "X", "", T1, 1)
    assert [c.type for c in result] == ["Resolved", "Ready"]
    assert result[0] is resolved
    result = set_condition([resolved], "Succeeded", "Unknown", "Running", "", T1, 1)
    assert [c.type for c in result] == ["Resolved", "Succeeded"]


def test_same_verdict_is_identical() -> None:
    first = set_condition([], "Ready", True, "R", "m", T0, 1)
    assert set_condition(first, "Ready", True, "R", "m", T1, 1) == first


def test_accepts_a_string_timestamp_and_status_enum() -> None:
    (condition,) = set_condition(
        [], "Ready", ConditionStatus.FALSE, "R", "", "2025-01-01T00:00:00Z", None
    )
    assert condition.last_transition_time == "2025-01-01T00:00:00Z"
    assert condition.status == ConditionStatus.FALSE


def test_rfc3339_converts_to_utc() -> None:
    assert rfc3339(datetime(2025, 1, 1, 2, 0, 0, 999, tzinfo=timezone(timedelta(hours=2)))) == (
        "2025-01-01T00:00:00Z"
    )


def test_lookup_helpers() -> None:
    conditions = [ready("True")]
    assert get_condition(conditions, "Ready") == conditions[0]
    assert get_condition(conditions, "Resolved") is None
    assert is_true(conditions, "Ready")
    assert not is_true([ready("False")], "Ready")
    assert not is_true([], "Ready")
