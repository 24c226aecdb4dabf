"""The SDK and the client's pure pieces: @flow, source packaging, builders, records."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from kitaru import Deployment, Flow, flow
from kitaru.client.errors import ExecutionFailed, InvalidArguments, KitaruError
from kitaru.client.handle import outcome
from kitaru.client.records import ExecutionInfo, deployment_info, execution_info, route_info
from kitaru.client.source import load_target, package_flow, parse_target
from kitaru.core.jobs import source_manifest, source_sha256
from kitaru.core.manifests import (
    build_deployment,
    build_invocation,
    build_route,
    build_source_config_map,
    route_view,
)
from kitaru.core.retention import Retention
from kitaru.core.routing import RouteView


@flow
def summarize(topic: str, depth: int = 1) -> str:
    """Summarize a topic."""
    return f"{topic}:{depth}"


class Recorder:
    """Stands in for KitaruClient: records what the SDK asks the client layer to do."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.deployments = self

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> str:
            self.calls.append((name, args, kwargs))
            return name

        return record


def test_flow_stays_a_plain_callable() -> None:
    assert isinstance(summarize, Flow)
    assert summarize("x", depth=2) == "x:2"
    assert summarize.func("y") == "y:1"
    assert summarize.name == "summarize"
    assert summarize.__doc__ == "Summarize a topic."
    assert flow(name="other")(lambda: 1).name == "other"


def test_deploy_and_invoke_go_through_the_client() -> None:
    client = Recorder()
    summarize.deploy(topic="t", tag="canary", exclusive=True, force=True, client=client)  # type: ignore[arg-type]
    summarize.invoke(topic="u", tag="stable", idempotency_key="k1", client=client)  # type: ignore[arg-type]
    assert client.calls == [
        (
            "deploy",
            (summarize,),
            {
                "inputs": {"topic": "t"},
                "tag": "canary",
                "exclusive": True,
                "image": None,
                "retention": None,
                "force": True,
                "max_concurrency": None,
            },
        ),
        (
            "invoke",
            ("summarize",),
            {
                "tag": "stable",
                "version": None,
                "inputs": {"topic": "u"},
                "retention": None,
                "routing_key": None,
                "idempotency_key": "k1",
            },
        ),
    ]


def test_a_deployment_invokes_its_pinned_version() -> None:
    client = Recorder()
    deployment = summarize.deployment(version=2, client=client)  # type: ignore[arg-type]
    assert isinstance(deployment, Deployment)
    deployment.invoke(topic="pinned run")
    deployment.invoke(topic="once", idempotency_key="k2")
    assert client.calls == [
        (
            "invoke",
            ("summarize",),
            {"version": 2, "inputs": {"topic": "pinned run"}, "idempotency_key": None},
        ),
        (
            "invoke",
            ("summarize",),
            {"version": 2, "inputs": {"topic": "once"}, "idempotency_key": "k2"},
        ),
    ]


@pytest.mark.parametrize(
    "target", ["flows/research.py", "research.py:", "flows/research:agent", ":x", "a.py:1x"]
)
def test_malformed_targets(target: str) -> None:
    with pytest.raises(InvalidArguments, match=r"use path/to/file\.py:flow_name"):
        parse_target(target)


FLOW_SOURCE = """from kitaru import flow


@flow
def research_agent(topic: str) -> str:
    return f"notes on {topic}"


not_a_flow = 42
"""


@pytest.fixture
def flow_file(tmp_path: Path) -> Path:
    """flows/research.py in a `kitaru init` project."""
    (tmp_path / ".kitaru").mkdir()
    path = tmp_path / "flows" / "research.py"
    path.parent.mkdir()
    path.write_text(FLOW_SOURCE)
    return path


def test_load_and_package_a_target(flow_file: Path) -> None:
    flow_obj, path, attr = load_target(f"{flow_file}:research_agent")
    assert flow_obj.name == "research_agent"
    package = package_flow(flow_obj, path, attr)
    assert package.entrypoint == "flows.research:research_agent"
    assert package.files == {"flows/research.py": FLOW_SOURCE.encode()}
    assert package.sha256 == source_sha256({"flows/research.py": FLOW_SOURCE.encode()})
    assert package.git is None or package.git.commit


def test_git_commit_and_dirty_flag_are_recorded(flow_file: Path) -> None:
    repo = flow_file.parent.parent
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "flows"], check=True)
    flow_obj, path, attr = load_target(f"{flow_file}:research_agent")
    clean = package_flow(flow_obj, path, attr).git
    assert clean is not None and len(clean.commit or "") == 40 and clean.dirty is False
    flow_file.write_text(FLOW_SOURCE + "\n# edited\n")
    dirty = package_flow(flow_obj, path, attr).git
    assert dirty is not None and dirty.dirty is True


@pytest.mark.parametrize(
    ("attr", "message"),
    [("missing", "has no attribute 'missing'"), ("not_a_flow", "is not a flow")],
)
def test_target_attribute_errors(flow_file: Path, attr: str, message: str) -> None:
    with pytest.raises(InvalidArguments, match=message):
        load_target(f"{flow_file}:{attr}")


def test_target_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidArguments, match="no such file"):
        load_target(f"{tmp_path}/nope.py:x")
    (tmp_path / ".kitaru").mkdir()
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(InvalidArguments, match=r"importing .* failed: RuntimeError: boom"):
        load_target(f"{broken}:x")


def test_source_config_map_is_immutable_and_content_addressed() -> None:
    files = {"research.py": b"print(1)\n"}
    sha = source_sha256(files)
    cm = build_source_config_map("research_agent", files, sha)
    assert cm["metadata"]["name"] == f"research-agent-src-{sha[:12]}"
    assert cm["immutable"] is True
    assert cm["data"] == {".kitaru__manifest": source_manifest(files), "research.py": "print(1)\n"}
    assert "binaryData" not in cm


def test_deployment_manifest() -> None:
    body = build_deployment(
        "research_agent",
        3,
        entrypoint="research:research_agent",
        runner_image="ghcr.io/kitaru-k8s/runner:0.1.0",
        inputs={"topic": "t"},
        input_schema={"type": "object"},
    )
    assert body["metadata"] == {
        "name": "research-agent-v3",
        "labels": {"kitaru.dev/flow": "research_agent", "kitaru.dev/version": "3"},
    }
    spec = body["spec"]
    assert spec["flow"] == "research_agent"
    assert spec["version"] == 3
    assert spec["snapshot"] == {"entrypoint": "research:research_agent"}
    assert spec["stack"]["runnerImage"] == "ghcr.io/kitaru-k8s/runner:0.1.0"
    assert spec["inputs"] == {"topic": "t"}
    assert spec["inputSchema"] == {"type": "object"}
    assert spec["stack"]["backoffLimit"] == 0
    assert "serviceAccountName" not in spec["stack"]


def test_deployment_manifest_stack_options() -> None:
    body = build_deployment(
        "f",
        1,
        entrypoint="m:f",
        image="img:1",
        retention=Retention(ttl_seconds=60, history_limit=5),
        service_account_name="counter",
        backoff_limit=3,
    )
    assert body["spec"]["stack"] == {
        "serviceAccountName": "counter",
        "backoffLimit": 3,
        "ttlSecondsAfterFinished": 60,
        "historyLimit": 5,
        "env": [],
        "envFrom": [],
    }


def test_route_manifest_new_and_compare_and_swap() -> None:
    view = RouteView("research_agent", "stable", True, frozenset({2}))
    new = build_route(view)
    assert new["metadata"]["name"] == "research-agent.stable"
    assert new["spec"] == {
        "flow": "research_agent",
        "tag": "stable",
        "exclusive": True,
        "versions": [2],
    }
    current = {
        **new,
        "metadata": {**new["metadata"], "resourceVersion": "42", "annotations": {"a": "b"}},
        "status": {"resolvedVersion": 1},
    }
    moved = build_route(RouteView("research_agent", "stable", True, frozenset({3})), current)
    assert moved["metadata"]["resourceVersion"] == "42"
    assert moved["metadata"]["annotations"] == {"a": "b"}
    assert moved["spec"]["versions"] == [3]
    assert "status" not in moved
    assert current["spec"]["versions"] == [2]
    assert route_view(moved) == RouteView("research_agent", "stable", True, frozenset({3}))
    assert route_view(None) is None


@pytest.mark.parametrize(
    ("kwargs", "spec"),
    [
        ({}, {"flow": "f", "inputs": {}}),
        ({"tag": "stable"}, {"flow": "f", "tag": "stable", "inputs": {}}),
        ({"version": 2, "inputs": {"a": 1}}, {"flow": "f", "version": 2, "inputs": {"a": 1}}),
        (
            {"retention": Retention(ttl_seconds=2)},
            {"flow": "f", "inputs": {}, "ttlSecondsAfterFinished": 2},
        ),
        (
            {"active_deadline_seconds": 3, "backoff_limit": 2, "resolve_deadline_seconds": 0},
            {
                "flow": "f",
                "inputs": {},
                "activeDeadlineSeconds": 3,
                "backoffLimit": 2,
                "resolveDeadlineSeconds": 0,
            },
        ),
    ],
)
def test_invocation_manifest(kwargs: dict[str, Any], spec: dict[str, Any]) -> None:
    body = build_invocation("f", **kwargs)
    assert body["metadata"] == {"generateName": "f-", "labels": {"kitaru.dev/flow": "f"}}
    assert body["spec"] == spec


def test_invocation_manifest_with_a_fixed_name() -> None:
    body = build_invocation("research_agent", name="run-1")
    assert body["metadata"] == {"name": "run-1", "labels": {"kitaru.dev/flow": "research_agent"}}


def test_records_from_objects() -> None:
    dep = deployment_info(
        {
            "metadata": {"name": "research-agent-v2", "creationTimestamp": "t0"},
            "spec": {
                "flow": "research_agent",
                "version": 2,
                "snapshot": {
                    "entrypoint": "research:research_agent",
                    "source": {"configMap": "cm", "sha256": "ab"},
                },
            },
            "status": {
                "tags": [{"tag": "canary", "exclusive": True}],
                "conditions": [{"type": "Ready", "status": "True", "reason": "Runnable"}],
            },
        }
    )
    assert dep.snapshot_name == "kitaru::research_agent::v2"
    assert [t.tag for t in dep.tags] == ["canary"]
    assert dep.ready is True
    assert dep.to_json()["tags"] == [{"tag": "canary", "exclusive": True, "weight": None}]
    route = route_info(
        {"spec": {"flow": "f", "tag": "benchmark", "exclusive": False, "versions": [2, 1]}}
    )
    assert route.versions == (1, 2)
    assert route.to_json()["mode"] == "shared"
    run = execution_info(
        {
            "metadata": {"name": "f-abcde"},
            "spec": {"flow": "f", "tag": "stable", "inputs": {"a": 1}},
            "status": {
                "phase": "Completed",
                "result": "ok",
                "resolved": {"version": 2, "tag": "stable"},
            },
        }
    )
    assert (run.exec_id, run.status, run.resolved_version, run.result) == (
        "f-abcde",
        "completed",
        2,
        "ok",
    )
    assert execution_info({"metadata": {"name": "x"}, "spec": {"flow": "f"}}).status == "pending"


def test_outcome_of_an_execution() -> None:
    done = ExecutionInfo(exec_id="e", flow="f", status="completed", result={"x": 1})
    assert outcome(done) == {"x": 1}
    failed = ExecutionInfo(exec_id="e", flow="f", status="failed", message="ValueError: boom")
    with pytest.raises(ExecutionFailed, match="execution e failed: ValueError: boom") as err:
        outcome(failed)
    assert err.value.failure_message == "ValueError: boom"
    with pytest.raises(ExecutionFailed, match="cancelled"):
        outcome(ExecutionInfo(exec_id="e", flow="f", status="cancelled", reason="Cancelled"))
    with pytest.raises(KitaruError, match="still running"):
        outcome(ExecutionInfo(exec_id="e", flow="f", status="running"))
