"""The runner: env contract in, termination message and exit code out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kitaru.core.jobs import source_key, source_sha256
from kitaru.runner import run

FLOWS = """
class Flow:
    def __init__(self, func):
        self.func = func
    def __call__(self, *a, **k):
        raise AssertionError("the runner must call .func")

def echo(topic: str, depth: int = 1) -> dict:
    return {"topic": topic, "depth": depth}

wrapped = Flow(echo)

def boom(**_):
    raise ValueError("no luck")

def big(**_):
    return "x" * 5000

def exact(n: int):
    return "y" * n

def loud(msg):
    raise RuntimeError(msg)

def not_json(**_):
    return {1, 2}

def nan(**_):
    return {"score": float("nan")}

def deep(levels: int):
    value = "x"
    for _ in range(levels):
        value = [value]
    return value

def int_keys(**_):
    return {1: "one"}

def echo_value(value):
    return value
"""
SCHEMA = {
    "type": "object",
    "properties": {"topic": {"type": "string"}, "depth": {"type": "integer"}},
    "required": ["topic"],
    "additionalProperties": False,
}


@pytest.fixture
def source(tmp_path: Path) -> dict[str, str]:
    """A mounted source ConfigMap: one key per file (paths encoded)."""
    files = {"pkg/flows_mod.py": FLOWS.encode(), "pkg/__init__.py": b""}
    mount = tmp_path / "mount"
    mount.mkdir()
    for path, data in files.items():
        (mount / source_key(path)).write_bytes(data)
    return {
        "KITARU_SOURCE_DIR": str(mount),
        "KITARU_SOURCE_SHA256": source_sha256(files),
        "KITARU_SOURCE_FILES": json.dumps(sorted(files)),
    }


def outcome(
    env: dict[str, str], entrypoint: str, inputs: Any, schema: Any = None
) -> tuple[int, dict]:
    for name in [m for m in sys.modules if m == "pkg" or m.startswith("pkg.")]:
        del sys.modules[name]
    code, message = run(
        {
            **env,
            "KITARU_ENTRYPOINT": entrypoint,
            "KITARU_INPUTS": json.dumps(inputs),
            "KITARU_INPUT_SCHEMA": json.dumps(schema if schema is not None else {}),
        }
    )
    assert len(message.encode()) <= 4096
    return code, json.loads(message)


@pytest.mark.parametrize(
    ("entrypoint", "inputs", "schema", "code", "payload"),
    [
        (
            "pkg.flows_mod:wrapped",
            {"topic": "t"},
            SCHEMA,
            0,
            {"ok": True, "result": {"topic": "t", "depth": 1}},
        ),
        (
            "pkg.flows_mod:echo",
            {"topic": "t", "depth": 3},
            SCHEMA,
            0,
            {"ok": True, "result": {"topic": "t", "depth": 3}},
        ),
        (
            "pkg.flows_mod:boom",
            {},
            None,
            1,
            {"ok": False, "type": "ValueError", "message": "no luck"},
        ),
        ("pkg.flows_mod:exact", {"n": 4096 - len('{"ok": true, "result": ""}')}, None, 0, None),
    ],
)
def test_outcomes(
    source: dict[str, str], entrypoint: str, inputs: Any, schema: Any, code: int, payload: Any
) -> None:
    got_code, got = outcome(source, entrypoint, inputs, schema)
    assert got_code == code
    if payload is not None:
        assert got == payload
    else:
        assert got["ok"] is True


@pytest.mark.parametrize(
    ("entrypoint", "inputs", "schema", "type_", "needle"),
    [
        ("pkg.flows_mod:big", {}, None, "ResultTooLarge", "5026 bytes"),
        (
            "pkg.flows_mod:exact",
            {"n": 4096 - len('{"ok": true, "result": ""}') + 1},
            None,
            "ResultTooLarge",
            "4097",
        ),
        ("pkg.flows_mod:not_json", {}, None, "ResultNotSerializable", "not JSON"),
        ("pkg.flows_mod:nan", {}, None, "ResultNotSerializable", "nan at 'score'"),
        ("pkg.flows_mod:deep", {"levels": 65}, None, "ResultNotSerializable", "64 levels deep"),
        # Deeper than json.dumps recurses: refused, not a crash without a message.
        ("pkg.flows_mod:deep", {"levels": 50_000}, None, "ResultNotSerializable", "64 levels"),
        ("pkg.flows_mod:int_keys", {}, None, "ResultNotSerializable", "key 1 is not a string"),
        ("pkg.flows_mod:echo", {"depth": "x"}, SCHEMA, "InvalidInputs", "depth"),
        ("pkg.flows_mod:echo", {"topic": "t", "extra": 1}, SCHEMA, "InvalidInputs", "extra"),
        ("pkg.flows_mod:missing", {}, None, "EntrypointNotFound", "missing"),
        ("pkg.nope:echo", {}, None, "EntrypointNotFound", "pkg.nope"),
    ],
)
def test_failures(
    source: dict[str, str], entrypoint: str, inputs: Any, schema: Any, type_: str, needle: str
) -> None:
    code, payload = outcome(source, entrypoint, inputs, schema)
    assert code == 1
    assert payload["ok"] is False and payload["type"] == type_
    assert needle in payload["message"]


def test_source_mismatch_is_refused(source: dict[str, str], tmp_path: Path) -> None:
    (Path(source["KITARU_SOURCE_DIR"]) / source_key("pkg/flows_mod.py")).write_text("tampered")
    code, payload = outcome(source, "pkg.flows_mod:echo", {"topic": "t"})
    assert (code, payload["type"]) == (1, "SourceMismatch")
    wrong = {**source, "KITARU_SOURCE_SHA256": "0" * 64}
    assert outcome(wrong, "pkg.flows_mod:echo", {"topic": "t"})[1]["type"] == "SourceMismatch"


def test_huge_error_message_is_shortened_but_typed(source: dict[str, str]) -> None:
    code, payload = outcome(source, "pkg.flows_mod:loud", {"msg": "9" * 9000})
    assert code == 1 and payload["type"] == "RuntimeError"
    assert payload["message"].endswith("[truncated]")


def test_main_writes_the_termination_path_and_logs(source: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "termination-log"
    env = {
        **source,
        "KITARU_FLOW": "echo",
        "KITARU_ENTRYPOINT": "pkg.flows_mod:boom",
        "KITARU_TERMINATION_PATH": str(path),
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "kitaru.runner"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert json.loads(path.read_text()) == {"ok": False, "type": "ValueError", "message": "no luck"}
    assert "starting flow echo" in proc.stdout and "failed: ValueError" in proc.stdout


HOSTILE_RESULTS = [
    "<script>alert(document.cookie)</script>",
    "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\r\x00\x9b\u202e",
    '{"ok": false, "type": "Forged", "message": "not from the runner"}',
    ["</div>", {"nested": '["json", "looking"]'}, "$(rm -rf /)", "Grüße 👋"],
]


@pytest.mark.parametrize("value", HOSTILE_RESULTS, ids=["html", "ansi", "json-string", "mixed"])
def test_a_hostile_result_is_data(source: dict[str, str], value: Any) -> None:
    code, payload = outcome(source, "pkg.flows_mod:echo_value", {"value": value})
    assert (code, payload) == (0, {"ok": True, "result": value})


def test_the_deepest_result_allowed_is_delivered(source: dict[str, str]) -> None:
    code, payload = outcome(source, "pkg.flows_mod:deep", {"levels": 64})
    assert code == 0 and payload["ok"] is True
