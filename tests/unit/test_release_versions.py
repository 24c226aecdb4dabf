"""One version everywhere a release names one: the package, the chart (version and
appVersion, hence its default image tags), the images the Makefile and the docs build and
pull, and the runner image's build argument."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
# An image of the project named with a version-like tag (not `:dev`, `:$(IMAGE_TAG)`, ...).
IMAGE_TAG = re.compile(r"ghcr\.io/kitaru-k8s/(?:operator|runner):(\d[\w.+-]*)")


def test_the_chart_is_the_packages_version() -> None:
    chart = yaml.safe_load((REPO / "charts" / "kitaru-operator" / "Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (VERSION, VERSION)


def test_the_image_builds_are_tagged_with_it() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^IMAGE_TAG \?= (\S+)$", makefile, re.MULTILINE)[1] == VERSION  # type: ignore[index]
    dockerfile = (REPO / "cli" / "Dockerfile.runner").read_text()
    assert f"ARG KITARU_VERSION={VERSION}\n" in dockerfile


def test_every_versioned_image_name_outside_the_tests_is_it() -> None:
    tracked = subprocess.run(
        ["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True, check=True
    ).stdout.split()
    found: dict[str, set[str]] = {}
    for name in tracked:
        if name.startswith("tests/") or not (REPO / name).is_file():
            continue
        for tag in IMAGE_TAG.findall((REPO / name).read_text(errors="replace")):
            found.setdefault(tag, set()).add(name)
    assert set(found) == {VERSION}, found
