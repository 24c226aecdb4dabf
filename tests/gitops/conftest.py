"""The GitOps tier's fixtures: Flux (source-controller, kustomize-controller) and its
test git server beside the local cluster for the session, and per test a git
repository made from examples/gitops that Flux syncs into the test's namespace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gitops_support import FluxSync, GitRepo
from support import CLUSTER_DIR, Cluster, localnode


@pytest.fixture(scope="session")
def flux(cluster: Cluster, crds_installed: None) -> Iterator[str]:
    """Flux and the git server, started for the session (and stopped after it); yields
    the git server's base URL."""
    proc = localnode("gitops", "up")
    if proc.returncode != 0:
        pytest.fail(f"Flux could not be started:\n{proc.stdout}{proc.stderr}", pytrace=False)
    yield (CLUSTER_DIR / "gitops" / "git-url").read_text().strip()
    localnode("gitops", "down")


@pytest.fixture
def repo(flux: str, namespace: str, tmp_path: Path) -> GitRepo:
    """A team's repository, made from examples/gitops and pushed to the git server."""
    return GitRepo.from_example(tmp_path / "work", f"{flux}/{namespace}.git")


@pytest.fixture
def sync(repo: GitRepo, namespace: str) -> Iterator[FluxSync]:
    """The example's GitRepository and Kustomization (examples/gitops/flux/team-a.yaml)
    for `repo`, reconciling into the test's namespace. Created by the test (`create`);
    suspended and deleted afterwards, leaving the objects to the namespace's deletion."""
    flux_sync = FluxSync(namespace, repo.remote)
    yield flux_sync
    flux_sync.remove()
