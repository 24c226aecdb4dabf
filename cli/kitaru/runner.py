"""The entrypoint inside a run's container: `python -m kitaru.runner`.

Reads the runner environment contract (docs/ARCHITECTURE.md), loads the flow from
the image or from the mounted source ConfigMap (after checking its sha256; the
project's files laid out again under a fresh root on `sys.path`),
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
from pathlib import Path, PurePosixPath
from typing import Any

from kitaru.core.inputs import InvalidInputs, validate_inputs
from kitaru.core.jobs import (
    SOURCE_MANIFEST_KEY,
    TERMINATION_MESSAGE_LIMIT,
    source_key,
    source_manifest,
    source_sha256,
)
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


def read_source(source_dir: Path, listed: list[str], expected_sha256: str) -> dict[str, bytes]:
    """The mounted source files by path, checked against the version's sha256.

    The paths come from the ConfigMap's manifest (what `kitaru deploy` writes), else from
    `KITARU_SOURCE_FILES` (a ConfigMap made without one, e.g. by kustomize). Recomputing
    the manifest from what was read and hashing it binds every path and every byte.
    """
    manifest_file = source_dir / SOURCE_MANIFEST_KEY
    manifest = manifest_file.read_text() if manifest_file.is_file() else None
    paths = [line.partition("  ")[2] for line in manifest.splitlines()] if manifest else listed
    contents: dict[str, bytes] = {}
    for path in paths:
        parts = PurePosixPath(path).parts
        if not path or PurePosixPath(path).is_absolute() or ".." in parts:
            raise SourceMismatch(f"source path {path!r} is not relative to the project root")
        key_file = source_dir / source_key(path)
        if not key_file.is_file():
            raise SourceMismatch(f"source file {path!r} is missing from {source_dir}")
        contents[path] = key_file.read_bytes()
    actual = source_sha256(contents)
    if actual != expected_sha256:
        changed = sorted(
            set(source_manifest(contents).splitlines()) - set((manifest or "").splitlines())
        )
        detail = (
            f" ({changed[0].partition('  ')[2]!r} differs from the manifest)"
            if manifest and changed
            else ""
        )
        raise SourceMismatch(
            f"source sha256 is {actual}, the deployment recorded {expected_sha256}{detail}"
        )
    return contents


def materialize_source(contents: dict[str, bytes]) -> Path:
    """Write the verified files into a fresh directory laid out by path: the project root."""
    root = Path(tempfile.mkdtemp(prefix="kitaru-source-"))
    for path, data in contents.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def load_entrypoint(entrypoint: str, source_root: Path | None = None) -> Any:
    """The flow's plain function; with a source root, its module must come from there."""
    module_name, _, attr = entrypoint.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EntrypointNotFound(f"cannot import {module_name!r}: {exc}") from exc
    origin = getattr(module, "__file__", None)
    if source_root is not None and origin and not Path(origin).is_relative_to(source_root):
        raise EntrypointNotFound(
            f"{module_name!r} was imported from {origin}, not from the deployed source: a "
            "module of the image shadows it; rename the module or make its folder a package "
            "(__init__.py)"
        )
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
        root = None
        if source_dir:
            listed = json.loads(env.get("KITARU_SOURCE_FILES") or "[]")
            contents = read_source(Path(source_dir), listed, env.get("KITARU_SOURCE_SHA256", ""))
            root = materialize_source(contents)
            # The project root first, as `python -m` from it: sibling modules and
            # packages import, relative imports inside packages too.
            sys.path.insert(0, str(root))
        function = load_entrypoint(env["KITARU_ENTRYPOINT"], root)
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
