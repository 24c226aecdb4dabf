"""Exec wrapper of one container: private mount namespace, volume mounts, then the command.

Run as `python -I -S mountns.py SPEC.json` (stdlib only, so it starts fast and ignores the
container's PYTHON* variables); the container's environment is this process's environment.
SPEC holds `mounts` ([{source, target, readOnly}]), `workingDir`, `argv`, `startErrorFile`.

Mount targets are made visible at their absolute paths inside the namespace only. When
a target does not exist, its deepest existing ancestor is *mirrored*: a tmpfs is mounted
over it holding bind mounts of every original entry, and the missing path is created in
that tmpfs. So nothing is created on the host's filesystem; when the ancestor is `/`
itself, the mirror becomes a new root and the command runs chrooted into it.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

CLONE_NEWNS = 0x00020000
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            None,
        ),
        f"mount {source} on {target}",
    )


class Namespace:
    """Mount operations inside the private namespace, tracking which dirs are ours (tmpfs)."""

    def __init__(self, scratch: str) -> None:
        self.scratch = scratch  # a host dir (in the pod folder) for staging tmpfs mounts
        self.root = "/"
        self.owned: set[str] = set()
        self.count = 0

    def host(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/")) if self.root != "/" else path

    def resolve(self, path: str) -> str:
        """Resolve symlinks of `path` inside the (possibly new) root; returns a namespace path."""
        parts = [p for p in path.split("/") if p]
        done = "/"
        for _ in range(40):
            if not parts:
                return done
            nxt = os.path.join(done, parts.pop(0))
            full = self.host(nxt)
            if os.path.islink(full):
                link = os.readlink(full)
                base = "/" if link.startswith("/") else done
                parts = [p for p in os.path.join(base, link).split("/") if p] + parts
                done = "/"
            else:
                done = nxt
        raise OSError(f"too many symlinks in {path}")

    def _mirror(self, directory: str) -> str:
        """Mount a tmpfs holding bind mounts of `directory`'s entries; return its host path."""
        self.count += 1
        stage = os.path.join(self.scratch, str(self.count))
        os.makedirs(stage, exist_ok=True)
        mount("tmpfs", stage, "tmpfs", 0)
        source = self.host(directory)
        for name in os.listdir(source):
            src, dst = os.path.join(source, name), os.path.join(stage, name)
            if os.path.islink(src):
                os.symlink(os.readlink(src), dst)
            elif os.path.isdir(src):
                os.mkdir(dst)
                mount(src, dst, None, MS_BIND | MS_REC)
            else:
                open(dst, "w").close()
                mount(src, dst, None, MS_BIND)
        return stage

    def ensure(self, path: str, is_dir: bool) -> str:
        """Make `path` exist (as dir or file) without touching the host; return its host path."""
        path = self.resolve(path)
        if os.path.lexists(self.host(path)):
            return self.host(path)
        ancestor = os.path.dirname(path)
        while not os.path.isdir(self.host(ancestor)):
            ancestor = os.path.dirname(ancestor)
        if ancestor not in self.owned:
            stage = self._mirror(ancestor)
            if ancestor == "/" and self.root == "/":
                self.root = stage
            else:
                mount(stage, self.host(ancestor), None, MS_MOVE)
            self.owned.add(ancestor)
        current = ancestor
        rel = os.path.relpath(path, ancestor).split("/")
        for i, part in enumerate(rel):
            current = os.path.join(current, part)
            last = i == len(rel) - 1
            if last and not is_dir:
                open(self.host(current), "w").close()
            else:
                os.mkdir(self.host(current))
                self.owned.add(current)
        return self.host(path)

    def bind(self, source: str, target: str, read_only: bool) -> None:
        host_target = self.ensure(target, os.path.isdir(source))
        mount(source, host_target, None, MS_BIND | MS_REC)
        if read_only:
            mount(None, host_target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)


def _fail(spec: dict[str, str], message: str) -> None:
    with open(spec["startErrorFile"], "w") as f:
        f.write(message)
    print(message, file=sys.stderr)
    sys.exit(128)


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    try:
        _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        ns = Namespace(os.path.join(os.path.dirname(sys.argv[1]), "mnt"))
        # Parents before children, so a volume mounted inside another one stays visible.
        for m in sorted(spec["mounts"], key=lambda m: m["target"].count("/")):
            ns.bind(m["source"], m["target"], m.get("readOnly", False))
        workdir = spec.get("workingDir") or "/"
        ns.ensure(workdir, True)
        if ns.root != "/":
            os.chroot(ns.root)
        os.chdir(workdir)
    except OSError as err:
        _fail(spec, f"failed to set up the container's mounts: {err}")
    argv = spec["argv"]
    try:
        os.execvp(argv[0], argv)
    except OSError as err:
        if isinstance(err, FileNotFoundError):
            _fail(spec, f'exec: "{argv[0]}": executable file not found in $PATH')
        _fail(spec, f'exec: "{argv[0]}": {err}')


if __name__ == "__main__":
    main()
