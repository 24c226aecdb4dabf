"""GitOps for real: Flux (source-controller and kustomize-controller, built from the Go
module proxy) reconciles the `hello` flow of examples/gitops from a git server on this
machine into the test's namespace, with the Kustomization of examples/gitops/flux.

Every story is a commit pushed with the git CLI, as a team would. Invocations are
asserted by their resolution and their Job (the version's image and source), which
holds with or without a node to run the Job on.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from gitops_support import (
    EXAMPLE,
    FluxSync,
    GitRepo,
    condition,
    get,
    items,
    operator_ready,
)
from kitaru.core.jobs import source_sha256
from kitaru.core.manifests import build_invocation
from support import KUBECONFIG, OperatorProcess, kubectl, wait_for

V3_SOURCE = '''"""Version 3 of the hello flow."""


def hello(name: str = "world", excited: bool = False) -> str:
    greeting = f"Hi there, {name}"
    return greeting + "!" if excited else greeting + "."
'''
HEALTH = EXAMPLE / "argocd" / "health"


def routes(namespace: str) -> dict[str, list[int]]:
    return {r["spec"]["tag"]: r["spec"]["versions"] for r in items("flowroutes", namespace)}


def versions(namespace: str) -> set[int]:
    return {d["spec"]["version"] for d in items("flowdeployments", namespace)}


def sources(namespace: str) -> set[str]:
    """The flow's source ConfigMaps."""
    return {
        c["metadata"]["name"]
        for c in items("configmaps", namespace)
        if (c["metadata"].get("labels") or {}).get("kitaru.dev/flow") == "hello"
    }


def settled(namespace: str, expected_routes: dict[str, list[int]]) -> bool:
    """The flow's routes are exactly `expected_routes`, and the operator has judged
    every route and version Ready at its current generation."""
    objects = items("flowroutes", namespace) + items("flowdeployments", namespace)
    return routes(namespace) == expected_routes and all(operator_ready(o) for o in objects)


def resolved(namespace: str, name: str, tag: str) -> dict[str, Any]:
    """Invoke `hello` by `tag` and return the invocation once the operator resolved it
    and created its Job."""
    kubectl(
        "create",
        "-f",
        "-",
        namespace=namespace,
        input=json.dumps(build_invocation("hello", name=name, tag=tag, inputs={"name": "gitops"})),
    )

    def dispatched() -> dict[str, Any] | None:
        invocation = get("flowinvocation", name, namespace) or {}
        status = invocation.get("status") or {}
        return invocation if status.get("resolved") and status.get("jobName") else None

    return wait_for(dispatched, timeout=60, interval=0.2, message=f"{name} dispatched")


def assert_runs_version(namespace: str, invocation: dict[str, Any], version: int) -> None:
    """The invocation resolved to `version` and its Job runs that version's source."""
    chain = invocation["status"]["resolved"]
    assert chain["version"] == version, chain
    assert chain["deployment"] == f"hello-v{version}"
    deployment = get("flowdeployment", f"hello-v{version}", namespace)
    assert deployment is not None
    assert chain["sourceSha256"] == deployment["spec"]["snapshot"]["source"]["sha256"]
    job = get("job", invocation["status"]["jobName"], namespace)
    assert job is not None
    assert job["metadata"]["labels"]["kitaru.dev/version"] == str(version)
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == deployment["spec"]["snapshot"]["image"]
    assert f"hello-source-v{version}" in [
        v.get("configMap", {}).get("name") for v in pod["volumes"]
    ]


def argocd_health(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Argo CD's verdict on a live object, from the example's Lua health check."""
    import lupa  # a dev dependency: the Lua runtime Argo CD health checks run in

    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    return dict(lua.execute((HEALTH / f"{kind.lower()}.lua").read_text()).items())


EXAMPLE_ROUTES = {"default": [1], "stable": [2], "reviewed": [1, 2]}


def test_first_sync_waits_for_the_operator_then_reports_every_object_healthy(
    repo: GitRepo, sync: FluxSync, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    head = repo.git("rev-parse", "HEAD")
    sync.create()

    # No operator yet: the objects exist, but nothing has judged them, and the
    # example's health checks (our conditions and observedGeneration) hold Flux back.
    failed = sync.failed(head, "HealthCheckFailed")
    assert routes(namespace) == EXAMPLE_ROUTES
    assert versions(namespace) == {1, 2}
    assert "FlowRoute" in failed["message"], failed

    operator = OperatorProcess(namespace, tmp_path_factory.mktemp("operator"), resync_seconds=5)
    operator.start()
    try:
        kustomization = sync.applied(head)
        assert condition(kustomization, "Healthy").get("status") == "True", kustomization
        objects = items("flowroutes", namespace) + items("flowdeployments", namespace)
        assert all(operator_ready(o) for o in objects), objects
        # What Flux applied is what it tracks, and nothing the operator made besides.
        tracked = {
            e["id"].split("_", 1)[1] for e in kustomization["status"]["inventory"]["entries"]
        }
        assert tracked == {
            "hello-source-v1__ConfigMap",
            "hello-source-v2__ConfigMap",
            "hello-v1_kitaru.dev_FlowDeployment",
            "hello-v2_kitaru.dev_FlowDeployment",
            "hello.default_kitaru.dev_FlowRoute",
            "hello.reviewed_kitaru.dev_FlowRoute",
            "hello.stable_kitaru.dev_FlowRoute",
        }
        by_name = {o["metadata"]["name"]: o for o in objects}
        assert by_name["hello.default"]["status"]["resolvedVersion"] == 1
        assert by_name["hello.stable"]["status"]["resolvedVersion"] == 2
        assert [t["tag"] for t in by_name["hello-v2"]["status"]["tags"]] == ["reviewed", "stable"]
        # Argo CD's health checks (examples/gitops/argocd) agree on the live objects.
        for obj in objects:
            assert argocd_health(obj["kind"], obj)["status"] == "Healthy", obj
        assert_runs_version(namespace, resolved(namespace, "first-stable", "stable"), 2)
    finally:
        operator.stop()
    assert "Traceback" not in operator.log(), operator.log()


def test_kstatus_alone_waits_until_the_operator_observed_the_new_generation(
    repo: GitRepo, sync: FluxSync, namespace: str, own_operator: OperatorProcess
) -> None:
    sync.health_checks = False  # a Kustomization without the example's expressions
    sync.first_sync(repo)
    wait_for(lambda: settled(namespace, EXAMPLE_ROUTES), timeout=60, message="settled")

    # The operator is down while a commit edits a route: its status still carries the
    # old observedGeneration, which kstatus reads as in progress.
    own_operator.stop()
    repo.route("stable", 1)
    moved = repo.commit("stable back to v1")
    failed = sync.failed(moved, "HealthCheckFailed")
    assert f"FlowRoute/{namespace}/hello.stable status: 'InProgress'" in failed["message"]
    stable = get("flowroute", "hello.stable", namespace)
    assert stable is not None
    assert stable["status"]["observedGeneration"] < stable["metadata"]["generation"]

    own_operator.start()
    sync.applied(moved)
    wait_for(
        lambda: settled(namespace, {**EXAMPLE_ROUTES, "stable": [1]}),
        timeout=60,
        message="stable on v1, every object Ready",
    )


def test_a_commit_promotes_v3_to_stable_and_a_commit_rolls_it_back(
    repo: GitRepo, sync: FluxSync, namespace: str, running_operator: OperatorProcess
) -> None:
    sync.first_sync(repo)

    repo.add_version(3, V3_SOURCE)
    repo.route("stable", 3)
    promote = repo.commit("hello v3, promoted to stable")
    sync.applied(promote)
    wait_for(
        lambda: settled(namespace, {**EXAMPLE_ROUTES, "stable": [3]}),
        timeout=60,
        message="stable on v3, every object Ready",
    )
    v3 = get("flowdeployment", "hello-v3", namespace)
    assert v3 is not None
    assert v3["spec"]["snapshot"]["source"]["sha256"] == source_sha256(
        {"hello.py": V3_SOURCE.encode()}
    )
    assert_runs_version(namespace, resolved(namespace, "after-promote", "stable"), 3)

    repo.route("stable", 2)
    rollback = repo.commit("roll stable back to v2")
    sync.applied(rollback)
    wait_for(
        lambda: settled(namespace, EXAMPLE_ROUTES),
        timeout=60,
        message="stable back on v2, every object Ready",
    )
    assert versions(namespace) == {1, 2, 3}  # v3 stays, untagged
    assert_runs_version(namespace, resolved(namespace, "after-rollback", "stable"), 2)


def test_a_mistaken_commit_is_named_by_the_sync_and_the_next_one_fixes_it(
    repo: GitRepo, sync: FluxSync, namespace: str, running_operator: OperatorProcess
) -> None:
    sync.first_sync(repo)

    # A tag moved to a version that does not exist: the example's health check reads
    # the operator's VersionNotFound and fails the sync at once, not at the timeout.
    repo.route("stable", 9)
    typo = repo.commit("promote v9 (there is no v9)")
    failed = sync.failed(typo, "HealthCheckFailed")
    assert "failed early due to stalled resources" in failed["message"], failed
    assert f"FlowRoute/{namespace}/hello.stable status: 'Failed'" in failed["message"], failed

    # A committed version edited: the API server refuses it by our rule's message.
    repo.route("stable", 2)
    repo.edit_version(1, {"name": "edited"})
    edited = repo.commit("fix the tag, but edit v1")
    refused = sync.failed(edited, "ReconciliationFailed")
    assert "hello-v1" in refused["message"], refused
    assert "a deployment version is immutable" in refused["message"], refused
    hello_v1 = get("flowdeployment", "hello-v1", namespace)
    assert hello_v1 is not None and hello_v1["spec"]["inputs"] == {"name": "world"}

    repo.edit_version(1, {"name": "world"})
    fixed = repo.commit("put v1 back as it was")
    sync.applied(fixed)
    wait_for(lambda: settled(namespace, EXAMPLE_ROUTES), timeout=60, message="settled")


def test_deleting_a_version_that_holds_stable_is_refused_by_name_and_a_fixed_commit_heals(
    repo: GitRepo, sync: FluxSync, namespace: str, running_operator: OperatorProcess
) -> None:
    sync.first_sync(repo)

    repo.remove_version(2)  # stable still routes to it
    bad = repo.commit("remove hello v2")
    refused = sync.failed(bad, "PruneFailed")
    assert "FlowDeployment/" in refused["message"], refused
    assert (
        "version 2 of flow hello holds the exclusive tag stable; move the tag to another "
        "version first" in refused["message"]
    ), refused
    v2 = get("flowdeployment", "hello-v2", namespace)
    assert v2 is not None and "deletionTimestamp" not in v2["metadata"]
    # ... and keeps its source (the example never prunes sources), so stable still runs.
    assert sources(namespace) == {"hello-source-v1", "hello-source-v2"}
    assert_runs_version(namespace, resolved(namespace, "while-refused", "stable"), 2)
    # Flux keeps the refused version in its inventory and retries: the refusal stands
    # until the commit is fixed, it is not forgotten.
    inventory = sync.kustomization()["status"]["inventory"]["entries"]
    assert any(e["id"].endswith("_hello-v2_kitaru.dev_FlowDeployment") for e in inventory)

    repo.route("stable", 1)
    repo.route("reviewed", 1)
    fixed = repo.commit("move stable to v1, then v2 can go")
    sync.applied(fixed)
    wait_for(
        lambda: (
            versions(namespace) == {1}
            and settled(namespace, {"default": [1], "stable": [1], "reviewed": [1]})
        ),
        timeout=60,
        message="v2 deleted, every route on v1 and Ready",
    )
    assert_runs_version(namespace, resolved(namespace, "after-fix", "stable"), 1)
    inventory = sync.kustomization()["status"]["inventory"]["entries"]
    assert not any("hello-v2" in e["id"] or "hello-source-v2" in e["id"] for e in inventory)
    assert sources(namespace) == {"hello-source-v1", "hello-source-v2"}  # left, untracked


def test_flux_and_the_operator_never_fight_at_rest(
    repo: GitRepo,
    sync: FluxSync,
    namespace: str,
    running_operator: OperatorProcess,
    k8s: kubernetes.client.ApiClient,
) -> None:
    sync.first_sync(repo)
    wait_for(lambda: settled(namespace, EXAMPLE_ROUTES), timeout=60, message="settled")

    def reconciliations() -> int:
        history = (sync.kustomization().get("status") or {}).get("history") or [{}]
        return int(history[0].get("totalReconciliations", 0))

    custom = kubernetes.client.CustomObjectsApi(k8s)
    core = kubernetes.client.CoreV1Api(k8s)
    listers = {
        "flowdeployments": lambda **kw: custom.list_namespaced_custom_object(
            "kitaru.dev", "v1alpha1", namespace, "flowdeployments", **kw
        ),
        "flowroutes": lambda **kw: custom.list_namespaced_custom_object(
            "kitaru.dev", "v1alpha1", namespace, "flowroutes", **kw
        ),
        "configmaps": lambda **kw: core.list_namespaced_config_map(namespace, **kw),
    }

    def writes_in_a_minute(kind: str) -> list[str]:
        """Every change to objects of `kind` in the namespace during 60 s."""
        listed = listers[kind]()
        version = (
            listed["metadata"]["resourceVersion"]
            if isinstance(listed, dict)
            else listed.metadata.resource_version
        )
        seen = []
        for event in kubernetes.watch.Watch().stream(
            listers[kind], resource_version=version, timeout_seconds=60
        ):
            obj = event["object"]
            name = obj["metadata"]["name"] if isinstance(obj, dict) else obj.metadata.name
            seen.append(f"{event['type']} {kind}/{name}")
        return seen

    before = reconciliations()
    with concurrent.futures.ThreadPoolExecutor(len(listers)) as pool:
        writes = [w for ws in pool.map(writes_in_a_minute, listers) for w in ws]
    after = reconciliations()
    # Flux re-applied everything several times (interval 10 s) and the operator kept
    # watching: not one write to any of the flow's objects.
    assert after - before >= 4, (before, after)
    assert writes == [], writes
    assert sync.kustomization()["status"]["conditions"][0]["status"] == "True"


def kitaru(namespace: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The `kitaru` CLI as a user runs it, with the namespace as the project."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KITARU_")}
    env.update(
        KUBECONFIG=str(KUBECONFIG),
        KITARU_PROJECT=namespace,
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_CACHE_HOME=str(home / "cache"),
    )
    return subprocess.run(
        [sys.executable, "-m", "kitaru.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_removing_a_flow_prunes_what_our_rules_allow_and_names_what_they_refuse(
    repo: GitRepo,
    sync: FluxSync,
    namespace: str,
    running_operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    sync.first_sync(repo)

    repo.remove_flow()
    retired = repo.commit("retire the hello flow")
    sync.fetch()

    def only_default_left() -> dict[str, Any] | None:
        k = sync.kustomization()
        ready = condition(k, "Ready")
        if (
            (k.get("status") or {}).get("lastAttemptedRevision", "").endswith(retired)
            and ready.get("reason") == "PruneFailed"
            and routes(namespace) == {"default": [1]}
            and versions(namespace) == {1}
        ):
            return ready
        return None

    # Flux deletes routes before versions (reverse of its apply order); our rules keep
    # the `default` route and the version it holds, and Flux names both refusals.
    refused = wait_for(only_default_left, timeout=120, interval=0.5, message="default left")
    assert "the default route of flow hello cannot be deleted" in refused["message"], refused
    assert "version 1 of flow hello holds the exclusive tag default" in refused["message"]

    # What the user does (examples/gitops/README.md): delete the flow on purpose.
    deleted = kitaru(namespace, tmp_path, "flow", "delete", "hello", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    sync.applied(retired)
    assert routes(namespace) == {} and versions(namespace) == set()
    assert sync.kustomization()["status"]["inventory"]["entries"] == []
    # The sources are never pruned (examples/gitops/hello/kustomization.yaml).
    assert sources(namespace) == {"hello-source-v1", "hello-source-v2"}


def test_a_flow_retired_in_two_commits_is_pruned_whole(
    repo: GitRepo, sync: FluxSync, namespace: str, running_operator: OperatorProcess
) -> None:
    sync.first_sync(repo)

    repo.annotate_route("default", "kitaru.dev/deleting-flow", "true")
    allow = repo.commit("hello: its default route may be deleted")
    sync.applied(allow)

    repo.remove_flow()
    retired = repo.commit("retire the hello flow")
    sync.applied(retired)
    wait_for(
        lambda: routes(namespace) == {} and versions(namespace) == set(),
        timeout=60,
        message="the flow is gone",
    )
    assert sync.kustomization()["status"]["inventory"]["entries"] == []
    # The sources are never pruned (examples/gitops/hello/kustomization.yaml).
    assert sources(namespace) == {"hello-source-v1", "hello-source-v2"}
