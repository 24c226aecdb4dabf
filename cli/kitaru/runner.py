"""The entrypoint inside a run's container: `python -m kitaru.runner`.

Reads the runner environment contract (docs/ARCHITECTURE.md), loads the flow from
the image or from the mounted source ConfigMap (after checking its sha256),
validates the inputs, calls the plain function and writes the outcome as JSON to
the termination message. Results that do not fit the message are reported as
`ResultTooLarge`, never cut.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kitaru.core.inputs import InvalidInputs, validate_inputs
from kitaru.core.jobs import TERMINATION_MESSAGE_LIMIT, source_key, source_sha256
from kitaru.core.payloads import json_problem

DEFAULT_TERMINATION_PATH = "/dev/termination-log"


class RunnerError(Exception):
    """A failure of the runner itself, reported with its own type name."""

    type_name = "RunnerError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SourceMismatch(RunnerError):
    type_name = "SourceMismatch"


class EntrypointNotFound(RunnerError):
    type_name = "EntrypointNotFound"


def materialize_source(source_dir: Path, files: list[str], expected_sha256: str) -> Path:
    """Copy the verified source files into a fresh directory laid out by path."""
    contents: dict[str, bytes] = {}
    for path in files:
        key_file = source_dir / source_key(path)
        if not key_file.is_file():
            raise SourceMismatch(f"source file {path!r} is missing from {source_dir}")
        contents[path] = key_file.read_bytes()
    actual = source_sha256(contents)
    if actual != expected_sha256:
        raise SourceMismatch(
            f"source sha256 is {actual}, the deployment recorded {expected_sha256}"
        )
    root = Path(tempfile.mkdtemp(prefix="kitaru-source-"))
    for path, data in contents.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def load_entrypoint(entrypoint: str) -> Any:
    module_name, _, attr = entrypoint.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EntrypointNotFound(f"cannot import {module_name!r}: {exc}") from exc
    try:
        obj = getattr(module, attr)
    except AttributeError as exc:
        raise EntrypointNotFound(f"{module_name!r} has no attribute {attr!r}") from exc
    # A `@flow` object keeps the plain function in `.func`.
    return getattr(obj, "func", obj)


def _error(type_name: str, message: str) -> str:
    payload = {"ok": False, "type": type_name, "message": message}
    encoded = json.dumps(payload)
    overflow = len(encoded.encode()) - TERMINATION_MESSAGE_LIMIT
    if overflow > 0:
        # An error message may be shortened (the type stays exact); results never are.
        payload["message"] = message[: max(0, len(message) - overflow - 16)] + " [truncated]"
        encoded = json.dumps(payload)
    return encoded


def run(env: dict[str, str]) -> tuple[int, str]:
    """Execute one flow run; (exit code, termination message)."""
    try:
        inputs = json.loads(env.get("KITARU_INPUTS") or "{}")
        schema = json.loads(env.get("KITARU_INPUT_SCHEMA") or "{}")
        source_dir = env.get("KITARU_SOURCE_DIR")
        if source_dir:
            files = json.loads(env.get("KITARU_SOURCE_FILES") or "[]")
            root = materialize_source(Path(source_dir), files, env.get("KITARU_SOURCE_SHA256", ""))
            sys.path.insert(0, str(root))
        function = load_entrypoint(env["KITARU_ENTRYPOINT"])
        validate_inputs(inputs, schema)
        result = function(**inputs)
    except InvalidInputs as exc:
        return 1, _error("InvalidInputs", str(getattr(exc, "message", exc)))
    except RunnerError as exc:
        return 1, _error(exc.type_name, exc.message)
    except Exception as exc:
        return 1, _error(type(exc).__name__, str(exc))

    # Checked before encoding: json.dumps would write NaN (not JSON), turn keys into
    # strings, or exhaust the stack on a deep result.
    problem = json_problem(result)
    if problem:
        return 1, _error("ResultNotSerializable", f"the flow's result is not JSON: {problem}")
    encoded = json.dumps({"ok": True, "result": result})
    size = len(encoded.encode())
    if size > TERMINATION_MESSAGE_LIMIT:
        return 1, _error(
            "ResultTooLarge",
            f"the result is {size} bytes as JSON; the termination message holds at most "
            f"{TERMINATION_MESSAGE_LIMIT}",
        )
    return 0, encoded


def main() -> int:
    env = dict(os.environ)
    flow = env.get("KITARU_FLOW", "?")
    print(f"kitaru runner: starting flow {flow} ({env.get('KITARU_ENTRYPOINT')})", flush=True)
    started = time.monotonic()
    code, message = run(env)
    path = Path(env.get("KITARU_TERMINATION_PATH") or DEFAULT_TERMINATION_PATH)
    path.write_text(message)
    outcome = "succeeded" if code == 0 else f"failed: {json.loads(message)['type']}"
    print(f"kitaru runner: flow {flow} {outcome} in {time.monotonic() - started:.3f}s", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
