"""Auto-versioning through the client layer against the real API server and the operator:
concurrent deploys never collide or lose a version, and numbers are never reused."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kitaru.client import KitaruClient
from kitaru.client.connection import combine, load_kube_context
from support import KUBECONFIG, create, deployment, runner_image, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

FLOW = "research_agent"
ENTRYPOINT = "flows.research:research_agent"
DEPLOYERS = 20


def client_for(namespace: str) -> KitaruClient:
    """A client on the local cluster's kubeconfig with the namespace as the project (no saved
    login, whatever the machine has)."""
    env = {"KUBECONFIG": str(KUBECONFIG), "KITARU_PROJECT": namespace}
    return KitaruClient(combine(env, None, load_kube_context(env)))


def high_water_mark(client: KitaruClient) -> str | None:
    """The client's mark: the annotation it raises right after a deploy."""
    default = client.kube.get("flowroutes", "research-agent.default") or {}
    return ((default.get("metadata") or {}).get("annotations") or {}).get(
        "kitaru.dev/highest-version"
    )


def recorded_mark(client: KitaruClient) -> int | None:
    """The operator's mark: the default route's status, which admission trusts."""
    default = client.kube.get("flowroutes", "research-agent.default") or {}
    recorded: int | None = (default.get("status") or {}).get("highestVersion")
    return recorded


def test_concurrent_deploys_and_never_reused_numbers(running_operator: Any, namespace: str) -> None:
    barrier = threading.Barrier(DEPLOYERS)
    got: dict[int, int] = {}
    errors: list[BaseException] = []

    def deploy(n: int) -> None:
        client = client_for(namespace)  # each producer its own client and connections
        try:
            barrier.wait(timeout=60)
            info = client.deployments.create_version(
                FLOW, entrypoint=ENTRYPOINT, image=runner_image()
            )
            got[n] = info.version
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=deploy, args=(n,)) for n in range(DEPLOYERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a deploy hung"
    assert not errors, errors

    # Every thread got its own number, and together they are 1..20: none lost.
    assert sorted(got.values()) == list(range(1, DEPLOYERS + 1)), got
    client = client_for(namespace)
    listed = client.deployments.list(FLOW)
    assert [d.version for d in listed] == list(range(1, DEPLOYERS + 1))
    assert {d.name for d in listed} == {f"research-agent-v{n}" for n in range(1, 21)}
    # `default` (moved by each tagless deploy) is on exactly one of them.
    default = [d.version for d in listed if any(t.tag == "default" for t in d.tags)]
    assert len(default) == 1, default

    # The operator has seen v20: the high-water mark on `default` says so.
    wait_for(lambda: recorded_mark(client) == 20, 60, message="high-water mark 20")

    # Delete the highest version, moving its exclusive tags off it first, as a user would.
    for tag in client.deployments.get(FLOW, version=DEPLOYERS).tags:
        if tag.exclusive:
            client.deployments.tag(FLOW, tag.tag, 1, exclusive=True)
    # Admission reads the routes from its own cache: a just-moved tag may take a moment.
    wait_for(lambda: client.deployments.delete(FLOW, DEPLOYERS), 30, message="delete v20")
    assert [d.version for d in client.deployments.list(FLOW)] == list(range(1, DEPLOYERS))

    # The next deploy gets 21, never the deleted 20.
    info = client.deployments.create_version(FLOW, entrypoint=ENTRYPOINT, image=runner_image())
    assert info.version == DEPLOYERS + 1
    assert info.snapshot_name == "kitaru::research_agent::v21"
    assert [t.tag for t in info.tags] == ["default"]
    versions = [d.version for d in client.deployments.list(FLOW)]
    assert versions == [*range(1, DEPLOYERS), DEPLOYERS + 1]

    # And a plain `kubectl create` of the deleted number is refused by the API server.
    refused = create(deployment(FLOW, DEPLOYERS), namespace, check=False)
    assert refused.returncode != 0
    assert "never reused" in refused.stderr, refused.stderr
    assert "version 20 of flow research_agent was used before" in refused.stderr
    assert client.kube.get("flowdeployments", "research-agent-v20") is None


def test_a_version_deleted_right_after_its_deploy_is_not_reused(namespace: str) -> None:
    """No operator here: the deploy itself records the high-water mark, so a delete that
    comes before the operator could notice the version cannot free its number."""
    client = client_for(namespace)
    client.deployments.create_version(FLOW, entrypoint=ENTRYPOINT, image=runner_image())
    second = client.deployments.create_version(
        FLOW, entrypoint=ENTRYPOINT, image=runner_image(), untagged=True
    )
    assert high_water_mark(client) == "2"
    client.deployments.delete(FLOW, second.version)
    third = client.deployments.create_version(FLOW, entrypoint=ENTRYPOINT, image=runner_image())
    assert third.version == 3
    assert "never reused" in create(deployment(FLOW, 2), namespace, check=False).stderr
