"""The operator decodes whatever the API server stores: a consumer's FlowInvocation
nested thousands of levels deep must not stop the lists and watches of its namespace."""

from __future__ import annotations

import subprocess
import sys

import pytest
from kitaru.core.payloads import API_MAX_DEPTH
from kitaru_operator.flows import deployment_record, parse_deployment_spec
from kitaru_operator.objects import (
    FinishedInvocation,
    Object,
    ObjectList,
    WatchEvent,
    validate_json,
)
from pydantic import TypeAdapter, ValidationError


def deep(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def invocation(name: str, inputs: str) -> str:
    return (
        f'{{"metadata": {{"name": "{name}", "namespace": "p"}}, '
        f'"spec": {{"flow": "f", "inputs": {{"k": {inputs}}}}}}}'
    )


@pytest.mark.parametrize("item", [Object, FinishedInvocation])
def test_a_deep_object_in_a_page_is_decoded_with_the_others(item: type) -> None:
    page = (
        f'{{"metadata": {{}}, "items": [{invocation("deep", deep(300))}, {invocation("ok", "1")}]}}'
    )
    with pytest.raises(ValidationError, match="recursion limit"):
        TypeAdapter(ObjectList[item]).validate_json(page)  # pydantic-core alone gives up
    decoded = validate_json(TypeAdapter(ObjectList[item]), page)
    assert [i.metadata.name for i in decoded.items] == ["deep", "ok"]
    event = f'{{"type": "ADDED", "object": {invocation("deep", deep(300))}}}'
    assert validate_json(TypeAdapter(WatchEvent[item]), event).object.metadata.name == "deep"


def test_other_errors_are_not_hidden() -> None:
    with pytest.raises(ValidationError, match="EOF"):
        validate_json(TypeAdapter(ObjectList[Object]), '{"items": [')


def test_a_deep_deployment_spec_is_parsed() -> None:
    raw = (
        '{"metadata": {"name": "f-v1"}, "spec": {"flow": "f", "version": 1, '
        f'"snapshot": {{"entrypoint": "m:f"}}, "inputs": {{"k": {deep(300)}}}}}}}'
    )
    record = deployment_record(validate_json(TypeAdapter(Object), raw))
    assert record is not None
    value = parse_deployment_spec(record.spec_json).inputs["k"]
    for _ in range(300):
        (value,) = value
    assert value == 1


def test_the_operator_process_decodes_the_api_servers_deepest_object() -> None:
    """`main` raises the recursion limit: Python's json (kopf's) and deep copies of a body
    as deep as the API server allows then work on the operator's main thread."""
    code = (
        "import copy, json, sys\n"
        "from kitaru.core.payloads import DECODE_RECURSION_LIMIT\n"
        "sys.setrecursionlimit(DECODE_RECURSION_LIMIT)\n"
        f'body = json.loads(\'{{"spec": {{"inputs": {deep(API_MAX_DEPTH - 3)}}}}}\')\n'
        "copy.deepcopy(body); json.dumps(body); print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout == "ok\n", done.stderr[-2000:]
