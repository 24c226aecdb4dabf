"""The image -> local command mapping (format documented at the top of cluster/images.yaml)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_IMAGES_FILE = Path(__file__).resolve().parent.parent / "images.yaml"
PYTHON_NAMES = {"python", "python3", f"python3.{sys.version_info.minor}"}


class ImageNotMapped(Exception):
    """No entry of the mapping file matches the image."""


def normalise(image: str) -> str:
    """Drop tag and digest; spell Docker Hub references in full (`busybox` ->
    `docker.io/library/busybox`)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    first, _, rest = name.partition("/")
    if not rest:
        return f"docker.io/library/{name}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{name}"
    if first == "index.docker.io":
        return f"docker.io/{rest}"
    return name


@dataclass
class ImageConfig:
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    project_python: bool = False
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None

    def argv(self, command: list[str] | None, args: list[str] | None) -> list[str]:
        """Docker's rules: `command` replaces entrypoint (and cmd), `args` replaces cmd."""
        if command:
            argv = [*command, *(args or [])]
        else:
            argv = [*self.entrypoint, *(args if args else self.cmd)]
        if argv and self.project_python and os.path.basename(argv[0]) in PYTHON_NAMES:
            argv[0] = sys.executable
        return argv


class ImageMap:
    """Loads the mapping file, re-reading it when it changes."""

    def __init__(self, path: Path = DEFAULT_IMAGES_FILE) -> None:
        self.path = path
        self._mtime = -1.0
        self._entries: dict[str, ImageConfig] = {}

    def _load(self) -> None:
        mtime = self.path.stat().st_mtime
        if mtime == self._mtime:
            return
        data: dict[str, Any] = yaml.safe_load(self.path.read_text()) or {}
        entries = {}
        for item in data.get("images", []):
            cfg = ImageConfig(
                entrypoint=[str(a) for a in item.get("entrypoint") or []],
                cmd=[str(a) for a in item.get("cmd") or []],
                project_python=bool(item.get("projectPython", False)),
                env={str(k): str(v) for k, v in (item.get("env") or {}).items()},
                working_dir=item.get("workingDir"),
            )
            for name in item.get("match", []):
                entries[normalise(str(name))] = cfg
        self._entries, self._mtime = entries, mtime

    def lookup(self, image: str) -> ImageConfig:
        self._load()
        try:
            return self._entries[normalise(image)]
        except KeyError:
            raise ImageNotMapped(
                f'image "{image}" has no local command mapping; add it to {self.path}'
            ) from None
