"""Where the checkout, its build script and the per-user build cache are."""

from __future__ import annotations

import os
from pathlib import Path

_PKG = Path(__file__).resolve().parent
CHECKOUT = _PKG.parents[1] if (_PKG.parent / "build.sh").exists() else Path.cwd()
BUILD_SCRIPT = CHECKOUT / "cluster" / "build.sh"


def cache_dir() -> Path:
    """The cache build.sh uses: $KITARU_CACHE, else $XDG_CACHE_HOME/kitaru-k8s."""
    if os.environ.get("KITARU_CACHE"):
        return Path(os.environ["KITARU_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "kitaru-k8s"
