"""Deploy from source: find the `@flow`, freeze its module file, describe its inputs.

A target is `path/to/file.py:flow_name`. The module file is packaged as-is (its
sha256 per `kitaru.core.jobs.source_sha256`, which the runner checks), and the
entrypoint becomes `<file stem>:<flow attribute>` because the runner puts the
source directory itself on `sys.path`.
"""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kitaru.client.errors import InvalidArguments
from kitaru.core.jobs import source_sha256
from kitaru.core.models import GitInfo

PROJECT_MARKER = ".kitaru"


class FlowLike(Protocol):
    """What deploy needs from a `@flow` object."""

    name: str
    func: Callable[..., Any]


@dataclass(frozen=True)
class SourcePackage:
    """One flow's frozen source and where it came from."""

    flow: str
    func: Callable[..., Any]
    entrypoint: str
    files: Mapping[str, bytes]
    sha256: str
    git: GitInfo | None


def parse_target(target: str) -> tuple[Path, str]:
    """`path/to/file.py:flow_name` → (path, attribute)."""
    path, sep, attr = target.rpartition(":")
    if not sep or not path.endswith(".py") or not attr.isidentifier():
        raise InvalidArguments(
            f"invalid target {target!r}: use path/to/file.py:flow_name", kind="InvalidTarget"
        )
    return Path(path), attr


def find_project_root(start: Path) -> Path | None:
    """The nearest directory at or above `start` holding `.kitaru/` (made by `kitaru init`)."""
    for directory in (start, *start.parents):
        if (directory / PROJECT_MARKER).is_dir():
            return directory
    return None


def confine_target(target: str, directory: Path) -> str:
    """`target` unchanged when its file lies inside the project that holds `directory`
    (its `kitaru init` root, else `directory` itself), symlinks resolved; else refused.

    For servers that deploy on someone else's word (the MCP server): a tool call must not
    import and upload any Python file the server's user can read (`../../x.py`, `/etc/…`)."""
    path, _ = parse_target(target)
    base = directory.resolve()
    root = find_project_root(base) or base
    resolved = (base / path).resolve()
    if not resolved.is_relative_to(root):
        raise InvalidArguments(
            f"target {str(path)!r} is outside the project {root}: only files of the project "
            "the server runs in can be deployed (give a path inside it, relative to "
            f"{base})",
            kind="InvalidTarget",
        )
    return target


def load_target(target: str) -> tuple[FlowLike, Path, str]:
    """Import the target's file: its `@flow` object, the file and the attribute name."""
    path, attr = parse_target(target)
    if not path.is_file():
        raise InvalidArguments(f"no such file: {path}", kind="InvalidTarget")
    path = path.resolve()
    module_name = f"_kitaru_target_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise InvalidArguments(f"cannot import {path}", kind="InvalidTarget")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise InvalidArguments(
            f"importing {path} failed: {type(exc).__name__}: {exc}", kind="InvalidTarget"
        ) from exc
    finally:
        sys.path.remove(str(path.parent))
    obj = getattr(module, attr, None)
    if obj is None:
        raise InvalidArguments(f"{path} has no attribute {attr!r}", kind="InvalidTarget")
    if not callable(getattr(obj, "func", None)) or not isinstance(getattr(obj, "name", None), str):
        raise InvalidArguments(
            f"{path}:{attr} is not a flow: decorate it with @flow (from kitaru import flow)",
            kind="InvalidTarget",
        )
    flow_obj: FlowLike = obj
    return flow_obj, path, attr


def git_info(directory: Path) -> GitInfo | None:
    """Commit and dirty flag of the git work tree holding `directory` (None outside git)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(directory), *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = git("status", "--porcelain")
    return GitInfo(commit=commit.strip(), dirty=bool(status and status.strip()))


def locate(flow_obj: FlowLike) -> tuple[Path, str]:
    """The file defining an imported `@flow` object, and its attribute name there."""
    source_file = inspect.getsourcefile(flow_obj.func)
    if source_file is None:
        raise InvalidArguments(
            f"cannot find the source file of flow {flow_obj.name!r}", kind="InvalidTarget"
        )
    return Path(source_file).resolve(), flow_obj.func.__name__


def package_flow(flow_obj: FlowLike, path: Path, attr: str) -> SourcePackage:
    """Freeze the module file `path` that defines `flow_obj` as attribute `attr`."""
    if not path.stem.isidentifier():
        raise InvalidArguments(
            f"{path.name} cannot be imported by the runner: name the file like a Python module",
            kind="InvalidTarget",
        )
    files = {path.name: path.read_bytes()}
    return SourcePackage(
        flow=flow_obj.name,
        func=flow_obj.func,
        entrypoint=f"{path.stem}:{attr}",
        files=files,
        sha256=source_sha256(files),
        git=git_info(path.parent),
    )
