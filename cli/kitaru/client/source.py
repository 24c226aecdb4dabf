"""Deploy from source: find the `@flow`, freeze its project, describe its inputs.

A target is `path/to/file.py:flow_name`. What ships is the flow's project: the nearest
directory at or above the file that `kitaru init` marked (`.kitaru/`), less what git
ignores and what `.kitaruignore` lists (`project_files`). The entrypoint is the file's
module path from that root (`pkg.sub.module:flow`), because the runner lays the files out
again under a fresh root and puts it first on `sys.path`: sibling modules, packages and
relative imports work as they do locally. The files are checked against the ConfigMap's
limits before anything is read (`kitaru.core.sources`); their sha256 (per
`kitaru.core.jobs.source_sha256`) is what the runner checks.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kitaru.client.errors import InvalidArguments
from kitaru.core.jobs import source_sha256
from kitaru.core.models import GitInfo
from kitaru.core.names import shown
from kitaru.core.sources import KITARUIGNORE, InvalidSource, check_source

PROJECT_MARKER = ".kitaru"
# Folders never shipped, wherever they are: Kitaru's and git's own, bytecode caches.
NEVER_SHIPPED = frozenset({PROJECT_MARKER, ".git", "__pycache__"})
# A folder holding one of these is a virtualenv (`pyvenv.cfg`), a conda environment, or
# another Kitaru project (shipped on its own): never part of this project's snapshot.
NOT_OURS = ("pyvenv.cfg", "conda-meta", PROJECT_MARKER)


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


def project_of(path: Path) -> Path:
    """The project root of the flow file `path` (absolute, symlinks in it not resolved)."""
    root = find_project_root(path.parent)
    if root is None:
        raise InvalidArguments(
            f"{path} is in no Kitaru project (no {PROJECT_MARKER}/ in {path.parent} or its "
            "parents): run `kitaru init` in the directory that holds your flow's package "
            "(usually your repository); that directory is what `kitaru deploy` ships",
            kind="NotAProject",
        )
    real_root = root.resolve()
    if not path.resolve().is_relative_to(real_root):
        raise InvalidArguments(
            f"{path} resolves to {path.resolve()}, outside its project {real_root}: deploy "
            "the file from the project it lives in",
            kind="TargetOutsideProject",
        )
    return root


def check_target_in(path: Path, project: Path) -> None:
    """Refuse a target file outside `project` (the Kitaru project a command runs in)."""
    absolute = Path(os.path.abspath(path))
    if not absolute.is_relative_to(project) and not absolute.resolve().is_relative_to(
        project.resolve()
    ):
        raise InvalidArguments(
            f"{path} is outside the Kitaru project {project} this command runs in: run "
            "`kitaru deploy` from the flow's own project",
            kind="TargetOutsideProject",
        )


def module_path(relative: Path) -> str:
    """The module a project file is imported as: `pkg/sub/mod.py` → `pkg.sub.mod`."""
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    bad = [part for part in parts if not part.isidentifier()]
    if not parts or bad:
        raise InvalidArguments(
            f"{relative} cannot be imported from the project root as a module: "
            f"{shown(bad[0] if bad else '__init__')} is not a Python name; name its file "
            "and folders like Python modules",
            kind="InvalidTarget",
        )
    return ".".join(parts)


@contextlib.contextmanager
def _imports_from(root: Path, top: str) -> Iterator[None]:
    """Import from the project root as the runner will (the root first on `sys.path`, the
    module's top-level package bound to the root's even where another one of that name is
    loaded or installed), and leave `sys.modules` and `sys.path` as they were, so the next
    deploy in this process (the MCP server) imports the files afresh."""
    hidden = {n: m for n, m in sys.modules.items() if n == top or n.startswith(f"{top}.")}
    for name in hidden:
        del sys.modules[name]
    before = set(sys.modules)
    sys.path.insert(0, str(root))
    try:
        spec = importlib.machinery.PathFinder.find_spec(top, [str(root)])
        if spec is not None and spec.submodule_search_locations is not None:
            package = importlib.util.module_from_spec(spec)
            sys.modules[top] = package
            if spec.loader is not None:
                spec.loader.exec_module(package)
        yield
    finally:
        sys.path.remove(str(root))
        for name in set(sys.modules) - before:
            if name == top or name.startswith(f"{top}.") or _from_root(sys.modules[name], root):
                del sys.modules[name]
        sys.modules.update(hidden)


def _from_root(module: Any, root: Path) -> bool:
    origin = getattr(module, "__file__", None) or ""
    locations = list(getattr(module, "__path__", None) or [])
    return any(Path(p).is_relative_to(root) for p in [origin, *locations] if p)


def load_target(target: str) -> tuple[FlowLike, Path, str]:
    """Import the target's file as its project's module: its `@flow` object, the file and
    the attribute name."""
    path, attr = parse_target(target)
    if not path.is_file():
        raise InvalidArguments(f"no such file: {path}", kind="InvalidTarget")
    path = Path(os.path.abspath(path))
    root = project_of(path)
    module_name = module_path(path.relative_to(root))
    try:
        with _imports_from(root, module_name.partition(".")[0]):
            module = importlib.import_module(module_name)
    except Exception as exc:
        raise InvalidArguments(
            f"importing {path} failed: {type(exc).__name__}: {exc}", kind="InvalidTarget"
        ) from exc
    origin = getattr(module, "__file__", None)
    if origin is None or Path(origin).resolve() != path.resolve():
        raise InvalidArguments(
            f"{module_name} is {origin}, not {path}: rename one of them",
            kind="InvalidTarget",
        )
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


def _git(directory: Path, *args: str) -> str | None:
    """stdout of a git command in `directory`, or None (no git, not a work tree, an error)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_info(directory: Path) -> GitInfo | None:
    """Commit and dirty flag of the git work tree holding `directory` (None outside git)."""
    commit = _git(directory, "rev-parse", "HEAD")
    if commit is None:
        return None
    status = _git(directory, "status", "--porcelain")
    return GitInfo(commit=commit.strip(), dirty=bool(status and status.strip()))


def locate(flow_obj: FlowLike) -> tuple[Path, str]:
    """The file defining an imported `@flow` object, and its attribute name there."""
    source_file = inspect.getsourcefile(flow_obj.func)
    if source_file is None:
        raise InvalidArguments(
            f"cannot find the source file of flow {flow_obj.name!r}", kind="InvalidTarget"
        )
    return Path(source_file).resolve(), flow_obj.func.__name__


# --- which files ship ------------------------------------------------------------------


def _ignore_spec(path: Path) -> Any:
    """The gitignore-syntax patterns of `path` (pathspec's GitIgnoreSpec), or None."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidArguments(f"cannot read {path}: {exc.strerror}", kind="InvalidSource") from exc
    import pathspec  # the client's dependency, imported when a project is packed

    return pathspec.GitIgnoreSpec.from_lines(lines)


def not_ours(folder: Path) -> bool:
    """A folder whose files are never part of the project around it."""
    return folder.name in NEVER_SHIPPED or any((folder / m).exists() for m in NOT_OURS)


def _git_listing(root: Path) -> list[str] | None:
    """What git would commit under `root` (tracked, and untracked but not ignored), or
    None outside a git work tree."""
    listed = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if listed is None:
        return None
    # --cached lists tracked files deleted in the work tree too: git would commit that.
    return sorted({p for p in listed.split("\0") if p and os.path.lexists(root / p)})


def _walk_listing(root: Path) -> list[str]:
    """Outside git: every file under `root`, less what its `.gitignore` files list (the
    deepest file's last matching pattern decides, as in git)."""
    found: list[str] = []

    def ignored(specs: list[tuple[str, Any]], path: str, is_dir: bool) -> bool:
        for base, spec in reversed(specs):
            decision = spec.check_file(path[len(base) :] + ("/" if is_dir else "")).include
            if decision is not None:
                return bool(decision)
        return False

    def walk(directory: Path, prefix: str, specs: list[tuple[str, Any]]) -> None:
        spec = _ignore_spec(directory / ".gitignore")
        if spec is not None:
            specs = [*specs, (prefix, spec)]
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            path = prefix + entry.name
            is_dir = entry.is_dir(follow_symlinks=False)
            if (is_dir and not_ours(Path(entry.path))) or ignored(specs, path, is_dir):
                continue
            if is_dir:
                walk(Path(entry.path), f"{path}/", specs)
            else:
                found.append(path)

    walk(root, "", [])
    return found


def project_files(root: Path) -> list[str]:
    """The files `kitaru deploy` ships from the project `root`: what git would commit
    there (in a git work tree), else every file less what `.gitignore` files list; then
    less what `.kitaruignore` at the root lists. Never `.kitaru/`, `.git/`,
    `__pycache__/`, virtualenvs, conda environments or nested Kitaru projects."""
    listed = _git_listing(root)
    if listed is None:
        listed = _walk_listing(root)
    kitaruignore = _ignore_spec(root / KITARUIGNORE)
    folders: dict[Path, bool] = {}

    def in_other_tree(path: str) -> bool:
        for parent in Path(path).parents:
            if parent == Path("."):
                return False
            if parent not in folders:
                folders[parent] = not_ours(root / parent)
            if folders[parent]:
                return True
        return False

    return [
        path
        for path in listed
        if Path(path).name not in NEVER_SHIPPED
        and not in_other_tree(path)
        and not (kitaruignore is not None and kitaruignore.match_file(path))
    ]


def _sizes(root: Path, paths: list[str]) -> dict[str, int]:
    """Each file's size, refusing what cannot be shipped: a link that leaves the project
    or names a folder, anything but a regular file (a FIFO would block the read)."""
    real_root = root.resolve()
    sizes: dict[str, int] = {}
    for path in paths:
        full = root / path
        try:
            if full.is_symlink():
                real = full.resolve()
                if not real.is_relative_to(real_root):
                    raise InvalidSource(
                        f"{shown(path)} is a symlink to {shown(str(real))}, outside the project: "
                        f"links are never followed out of it; copy what the flow needs into "
                        f"the project or list the link in {KITARUIGNORE}"
                    )
            info = full.stat()
        except OSError as exc:
            raise InvalidSource(
                f"cannot read {shown(path)}: {exc.strerror}; fix it or list it in {KITARUIGNORE}"
            ) from exc
        if stat.S_ISDIR(info.st_mode):
            raise InvalidSource(
                f"{shown(path)} is a folder that git lists as one entry (a symlink, a "
                f"submodule or a nested repository): its files are not shipped; list it in "
                f"{KITARUIGNORE} or replace it with the files themselves"
            )
        if not stat.S_ISREG(info.st_mode):
            raise InvalidSource(
                f"{shown(path)} is not a regular file (a FIFO, socket or device); list it "
                f"in {KITARUIGNORE}"
            )
        sizes[path] = info.st_size
    return sizes


def _read(root: Path, paths: list[str]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for path in paths:
        try:
            files[path] = (root / path).read_bytes()
        except OSError as exc:
            raise InvalidSource(
                f"cannot read {shown(path)}: {exc.strerror}; fix it or list it in {KITARUIGNORE}"
            ) from exc
    return files


def read_project(root: Path) -> dict[str, bytes]:
    """The project's files by path, checked against the ConfigMap's limits (by size,
    before anything is read)."""
    try:
        paths = project_files(root)
        check_source(_sizes(root, paths))
        return _read(root, paths)
    except InvalidSource as exc:
        raise InvalidArguments(exc.message, kind=exc.reason) from exc


def package_flow(flow_obj: FlowLike, path: Path, attr: str) -> SourcePackage:
    """Freeze the project of the file `path` that defines `flow_obj` as attribute `attr`."""
    path = Path(os.path.abspath(path))
    root = project_of(path)
    relative = path.relative_to(root)
    entrypoint = f"{module_path(relative)}:{attr}"
    files = read_project(root)
    if relative.as_posix() not in files:
        raise InvalidArguments(
            f"{relative} is not shipped: git or {KITARUIGNORE} ignores it; the flow's own file "
            "must be part of its project",
            kind="InvalidTarget",
        )
    return SourcePackage(
        flow=flow_obj.name,
        func=flow_obj.func,
        entrypoint=entrypoint,
        files=files,
        sha256=source_sha256(files),
        git=git_info(root),
    )
