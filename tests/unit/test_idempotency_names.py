"""Idempotency keys: the name a key derives, and what a repeated request gets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from kitaru.core.idempotency import (
    IDEMPOTENCY_WINDOW,
    Conflict,
    IdempotencyKeyReused,
    Request,
    idempotent_name,
    on_conflict,
    validate_idempotency_key,
)
from kitaru.core.manifests import build_invocation
from kitaru.core.models import FlowInvocationSpec
from kitaru.core.names import EXECUTION_ID_MAX_LENGTH, InvalidName, validate_execution_id

NOW = datetime(2026, 1, 2, 12, tzinfo=UTC)
KEY = "order-42"


def spec(**changes: object) -> dict[str, object]:
    body = build_invocation(
        "research_agent", tag="stable", inputs={"topic": "t"}, idempotency_key=KEY
    )
    return {**body["spec"], **changes}


REQUEST = Request.of(spec())


def test_the_name_is_deterministic_per_flow_and_key() -> None:
    name = idempotent_name("research_agent", KEY)
    assert name == idempotent_name("research_agent", KEY)
    assert name.startswith("research-agent-i")
    assert name != idempotent_name("research_agent", "order-43")
    assert name != idempotent_name("other_flow", KEY)


@pytest.mark.parametrize("flow", ["a", "f" * 48, "a_" * 24])
def test_the_name_is_a_valid_execution_id_for_any_flow(flow: str) -> None:
    name = idempotent_name(flow, "k" * 256)
    assert len(name) <= EXECUTION_ID_MAX_LENGTH
    assert validate_execution_id(name) == name


def test_long_flows_sharing_a_prefix_get_different_names() -> None:
    assert idempotent_name("f" * 47 + "a", KEY) != idempotent_name("f" * 47 + "b", KEY)


def test_build_invocation_names_a_keyed_invocation_after_its_key() -> None:
    body = build_invocation("research_agent", idempotency_key=KEY)
    assert body["metadata"]["name"] == idempotent_name("research_agent", KEY)
    assert body["spec"]["idempotencyKey"] == KEY
    assert "generateName" not in body["metadata"]
    assert "idempotencyKey" not in build_invocation("research_agent")["spec"]


@pytest.mark.parametrize("key", ["", "with space", "tab\t", "ü", "\x1b[2J", "k" * 257, None, 42])
def test_invalid_keys_are_refused_with_what_to_use(key: object) -> None:
    with pytest.raises(InvalidName, match=r"invalid idempotency key .* printable ASCII"):
        validate_idempotency_key(key)  # type: ignore[arg-type]


@pytest.mark.parametrize("key", ["a", "550e8400-e29b-41d4-a716-446655440000", "x/y:z=1", "k" * 256])
def test_valid_keys_pass_the_model_too(key: str) -> None:
    assert validate_idempotency_key(key) == key
    assert FlowInvocationSpec.model_validate(spec(idempotencyKey=key)).idempotency_key == key


def test_the_same_request_gets_the_existing_execution() -> None:
    decision = on_conflict(KEY, REQUEST, spec(), NOW - timedelta(hours=1), False, NOW)
    assert decision is Conflict.SAME


@pytest.mark.parametrize(
    "changed",
    [{"inputs": {"topic": "u"}}, {"tag": "canary"}, {"tag": None, "version": 2}, {"inputs": {}}],
)
def test_another_request_with_the_key_is_an_error_naming_it(changed: dict[str, object]) -> None:
    with pytest.raises(IdempotencyKeyReused, match="idempotency key 'order-42' of flow") as err:
        on_conflict(KEY, REQUEST, spec(**changed), NOW - timedelta(hours=1), True, NOW)
    assert "use a new key, or repeat the original request" in err.value.message


def test_a_finished_run_older_than_the_window_is_replaced() -> None:
    old = NOW - IDEMPOTENCY_WINDOW
    assert on_conflict(KEY, REQUEST, spec(inputs={"x": 1}), old, True, NOW) is Conflict.REPLACE


def test_a_run_older_than_the_window_that_still_runs_is_kept() -> None:
    old = NOW - IDEMPOTENCY_WINDOW - timedelta(hours=1)
    assert on_conflict(KEY, REQUEST, spec(), old, False, NOW) is Conflict.SAME
    with pytest.raises(IdempotencyKeyReused):
        on_conflict(KEY, REQUEST, spec(inputs={"x": 1}), old, False, NOW)


def test_a_name_taken_by_an_invocation_without_the_key_is_an_error() -> None:
    without = {k: v for k, v in spec().items() if k != "idempotencyKey"}
    with pytest.raises(IdempotencyKeyReused, match="without that key"):
        on_conflict(KEY, REQUEST, without, NOW, False, NOW)
