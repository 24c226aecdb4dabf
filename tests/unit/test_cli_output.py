"""The CLI's pure pieces: --input parsing, JSON envelopes, tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kitaru.cli.output import (
    Output,
    envelope,
    error_envelope,
    parse_inputs,
    render,
    render_error,
    result_text,
    table,
    terminal_safe,
)
from kitaru.client.errors import InvalidArguments, KitaruError, ResolutionFailed


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, {}),
        ("{}", {}),
        ('{"topic": "durable agents"}', {"topic": "durable agents"}),
        (
            '{"n": 1, "tags": ["a"], "nested": {"x": null}}',
            {"n": 1, "tags": ["a"], "nested": {"x": None}},
        ),
    ],
)
def test_inputs_from_json(raw: str | None, expected: dict) -> None:
    assert parse_inputs(raw) == expected


def test_inputs_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "inputs.json"
    path.write_text('{"topic": "from a file"}')
    assert parse_inputs(f"@{path}") == {"topic": "from a file"}


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("[1, 2]", "must be a JSON object"),
        ('"topic"', "not str"),
        ("42", "not int"),
        ("null", "not null"),
        ("{topic: x}", "not valid JSON"),
        ("", "not valid JSON"),
        ('{"n": NaN}', "not valid JSON: NaN is not a JSON number"),
        ('{"n": -Infinity}', "not valid JSON: -Infinity is not a JSON number"),
        ("[" * 100_000 + "]" * 100_000, "nested more than 64 levels deep"),
    ],
)
def test_inputs_that_are_not_an_object_are_rejected(raw: str, fragment: str) -> None:
    with pytest.raises(InvalidArguments, match=fragment) as err:
        parse_inputs(raw)
    assert err.value.kind == "InvalidInputs"


def test_inputs_file_that_is_missing_or_not_an_object(tmp_path: Path) -> None:
    with pytest.raises(InvalidArguments, match="cannot read --input file"):
        parse_inputs(f"@{tmp_path / 'missing.json'}")
    path = tmp_path / "list.json"
    path.write_text("[]")
    with pytest.raises(InvalidArguments, match=f"--input file {path} must be a JSON object"):
        parse_inputs(f"@{path}")


def test_item_and_items_envelopes() -> None:
    assert envelope("flow tag", Output(item={"tag": "stable"})) == {
        "command": "flow tag",
        "item": {"tag": "stable"},
    }
    assert envelope("flow deployments list", Output(items=[{"version": 1}, {"version": 2}])) == {
        "command": "flow deployments list",
        "items": [{"version": 1}, {"version": 2}],
        "count": 2,
    }
    assert envelope("executions list", Output(items=[])) == {
        "command": "executions list",
        "items": [],
        "count": 0,
    }


def test_error_envelope_carries_message_and_type() -> None:
    error = ResolutionFailed("flow 'x' has no tag 'y'", kind="TagNotFound")
    assert error_envelope("invoke", error) == {
        "command": "invoke",
        "error": {"message": "flow 'x' has no tag 'y'", "type": "TagNotFound"},
    }
    assert error_envelope("status", KitaruError("boom"))["error"]["type"] == "KitaruError"


def test_render_text_and_json() -> None:
    out = Output(item={"a": 1}, text="hello")
    assert render("x", out, "text") == "hello\n"
    assert json.loads(render("x", out, "json")) == {"command": "x", "item": {"a": 1}}
    assert render("x", Output(), "text") == ""
    assert render_error("x", KitaruError("bad"), "text") == "Error: bad\n"
    assert json.loads(render_error("x", KitaruError("bad"), "json"))["error"]["message"] == "bad"


def test_table_aligns_columns_and_formats_cells() -> None:
    text = table(
        ["FLOW", "VERSION", "TAGS"], [["research_agent", 1, ["default", "stable"]], ["b", None, []]]
    )
    assert text.splitlines() == [
        "FLOW            VERSION  TAGS",
        "research_agent  1        default, stable",
        "b               -        -",
    ]
    assert table(["A"], [], empty="Nothing.") == "Nothing.\n"


HOSTILE = "\x1b]0;pwned\x07\x1b[2J\rok\x00\x9b31m\u202eevil\x7f"


def test_terminal_controls_are_shown_escaped() -> None:
    assert terminal_safe(HOSTILE) == (
        "\\x1b]0;pwned\\x07\\x1b[2J\\x0dok\\x00\\x9b31m\\u202eevil\\x7f"
    )
    assert terminal_safe("line 1\n\tline 2 ✓ 日本") == "line 1\n\tline 2 ✓ 日本"


@pytest.mark.parametrize(
    "result",
    [HOSTILE, {"html": "<b>x</b>", "ansi": HOSTILE}, ['{"ok": false}', "</script>"]],
    ids=["string", "object", "json-looking"],
)
def test_a_hostile_result_cannot_reach_the_terminal(result: object) -> None:
    text = render(
        "executions get", Output(item={"result": result}, text=result_text(result)), "text"
    )
    assert not any(ord(c) < 0x20 and c not in "\n\t" for c in text)
    assert "\x9b" not in text and "\u202e" not in text
    # -o json carries the value unchanged.
    item = json.loads(render("executions get", Output(item={"result": result}), "json"))["item"]
    assert item["result"] == result
    failed = render_error("executions wait", KitaruError(f"execution x failed: {HOSTILE}"), "text")
    assert "\x1b" not in failed and failed.startswith("Error: execution x failed: ")
