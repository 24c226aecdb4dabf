"""Pid files that survive pid reuse, and stopping whole process groups."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 is the state)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def start_time(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[19] if fields else None


def write_pidfile(path: Path, pid: int) -> None:
    """Record pid and its kernel start time, so a recycled pid is never mistaken for ours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{pid} {start_time(pid) or '?'}\n")
    tmp.replace(path)


def read_pidfile(path: Path) -> tuple[int, str] | None:
    try:
        pid, started = path.read_text().split()
        return int(pid), started
    except (OSError, ValueError):
        return None


def recorded_alive(path: Path) -> bool:
    rec = read_pidfile(path)
    if rec is None:
        return False
    fields = _stat(rec[0])
    return fields is not None and fields[0] != "Z" and fields[19] == rec[1]


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and fields[2] == str(pgid) and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def with_cmdline(text: str) -> list[int]:
    """Live processes whose command line contains `text`."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(int(entry.name))
    return found


def stop_groups(pidfiles: Iterable[Path], grace: float = 10.0) -> list[int]:
    """SIGTERM the process group of every recorded pid, SIGKILL what is left after `grace`.

    Each recorded process leads its own group (it was started in a new session), so
    the group holds its children too. A pid file whose process was replaced by an
    unrelated one (pid reuse) is ignored. Returns the groups that could not be killed.
    """
    groups: list[int] = []
    for path in pidfiles:
        rec = read_pidfile(path)
        if rec is None:
            continue
        pid, started = rec
        current = start_time(pid)
        if current is not None and current != started:
            continue  # recycled pid: not ours
        groups.append(pid)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            groups = [g for g in groups if group_members(g)]
            if not groups:
                return []
            time.sleep(0.05)
    return groups
