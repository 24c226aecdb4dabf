"""The Job builder and the source-snapshot encoding."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from kitaru.core.jobs import (
    ANNOTATION_RESOLVED,
    SOURCE_MOUNT_PATH,
    NotRunnable,
    build_chain,
    build_job,
    parse_chain,
    source_key,
    source_sha256,
)
from kitaru.core.models import FlowDeploymentSpec, FlowInvocationSpec, SelectorKind

SHA = "a" * 64


def deployment(**overrides: Any) -> FlowDeploymentSpec:
    raw: dict[str, Any] = {
        "flow": "research_agent",
        "version": 2,
        "snapshot": {"image": "ghcr.io/x/runner@sha256:" + "b" * 64, "entrypoint": "m:f"},
        "inputs": {"topic": "t"},
        "inputSchema": {"type": "object"},
        "stack": {},
    }
    for key, value in overrides.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    return FlowDeploymentSpec.model_validate(raw)


def job(dep: FlowDeploymentSpec | None = None, **inv: Any) -> dict[str, Any]:
    dep = dep or deployment()
    chain = build_chain(SelectorKind.TAG, "stable", dep, "h" * 64)
    spec = FlowInvocationSpec.model_validate({"flow": dep.flow, **inv})
    return build_job("inv-1", "uid-1", "ns", dep.flow, chain, dep, {"topic": "x"}, spec)


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["template"]["spec"]["containers"][0]


def env(manifest: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(manifest)["env"]}


def test_name_owner_and_labels() -> None:
    manifest = job()
    meta = manifest["metadata"]
    assert meta["name"] == "inv-1" and meta["namespace"] == "ns"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "kitaru.dev/v1alpha1",
            "kind": "FlowInvocation",
            "name": "inv-1",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    labels = {
        "kitaru.dev/flow": "research_agent",
        "kitaru.dev/version": "2",
        "kitaru.dev/tag": "stable",
        "kitaru.dev/invocation": "inv-1",
    }
    assert meta["labels"] == labels
    assert manifest["spec"]["template"]["metadata"]["labels"] == labels


def test_version_selector_has_empty_tag_label() -> None:
    dep = deployment()
    chain = build_chain(SelectorKind.VERSION, None, dep, "h")
    spec = FlowInvocationSpec(flow=dep.flow, version=2)
    manifest = build_job("i", "u", "ns", dep.flow, chain, dep, {}, spec)
    assert manifest["metadata"]["labels"]["kitaru.dev/tag"] == ""


@pytest.mark.parametrize(
    ("stack", "inv", "backoff", "deadline"),
    [
        ({}, {}, 0, None),
        ({"backoffLimit": 3, "activeDeadlineSeconds": 60}, {}, 3, 60),
        ({"backoffLimit": 3, "activeDeadlineSeconds": 60}, {"backoffLimit": 0}, 0, 60),
        ({"backoffLimit": 3}, {"backoffLimit": 5, "activeDeadlineSeconds": 7}, 5, 7),
    ],
)
def test_backoff_and_deadline(
    stack: dict[str, Any], inv: dict[str, Any], backoff: int, deadline: int | None
) -> None:
    spec = job(deployment(stack=stack), **inv)["spec"]
    assert spec["backoffLimit"] == backoff
    assert spec.get("activeDeadlineSeconds") == deadline


def test_pod_is_restricted_and_runs_the_runner() -> None:
    manifest = job()
    pod = manifest["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod
    c = container(manifest)
    assert c["command"] == ["python", "-m", "kitaru.runner"]
    assert c["image"] == "ghcr.io/x/runner@sha256:" + "b" * 64
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_runner_env_contract() -> None:
    values = env(job())
    assert values["KITARU_FLOW"] == "research_agent"
    assert values["KITARU_ENTRYPOINT"] == "m:f"
    assert json.loads(values["KITARU_INPUTS"]) == {"topic": "x"}
    assert json.loads(values["KITARU_INPUT_SCHEMA"]) == {"type": "object"}
    assert "KITARU_SOURCE_DIR" not in values
    assert "volumes" not in job()["spec"]["template"]["spec"]


def test_source_config_map_is_mounted_read_only() -> None:
    source = {"configMap": "src-1", "sha256": SHA, "files": ["flows/a.py", "b.py"]}
    manifest = job(deployment(snapshot={"source": source}))
    values = env(manifest)
    assert values["KITARU_SOURCE_DIR"] == SOURCE_MOUNT_PATH
    assert values["KITARU_SOURCE_SHA256"] == SHA
    assert json.loads(values["KITARU_SOURCE_FILES"]) == ["flows/a.py", "b.py"]
    assert container(manifest)["volumeMounts"] == [
        {"name": "source", "mountPath": SOURCE_MOUNT_PATH, "readOnly": True}
    ]
    assert manifest["spec"]["template"]["spec"]["volumes"] == [
        {"name": "source", "configMap": {"name": "src-1"}}
    ]


def test_stack_context() -> None:
    stack = {
        "serviceAccountName": "runner",
        "resources": {"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}},
        "env": [
            {"name": "A", "value": "1"},
            {"name": "B", "secretKeyRef": {"name": "s", "key": "k"}},
            {"name": "C", "configMapKeyRef": {"name": "c", "key": "k"}},
        ],
        "envFrom": [{"configMap": "cm"}, {"secret": "sec"}],
    }
    manifest = job(deployment(stack=stack))
    c = container(manifest)
    assert manifest["spec"]["template"]["spec"]["serviceAccountName"] == "runner"
    # The stack asked for an identity: its token is mounted as Kubernetes does by default.
    assert "automountServiceAccountToken" not in manifest["spec"]["template"]["spec"]
    assert c["resources"] == {"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}}
    values = env(manifest)
    assert values["A"] == "1"
    assert values["B"] == {"secretKeyRef": {"name": "s", "key": "k"}}
    assert values["C"] == {"configMapKeyRef": {"name": "c", "key": "k"}}
    assert c["envFrom"] == [{"configMapRef": {"name": "cm"}}, {"secretRef": {"name": "sec"}}]


@pytest.mark.parametrize(
    ("snapshot_image", "runner_image", "expected"),
    [("img:1", None, "img:1"), (None, "stack:1", "stack:1"), ("img:1", "stack:1", "img:1")],
)
def test_image_choice(snapshot_image: str | None, runner_image: str | None, expected: str) -> None:
    dep = deployment(snapshot={"image": snapshot_image}, stack={"runnerImage": runner_image})
    assert build_chain(SelectorKind.DEFAULT, "default", dep, "h").image == expected


def test_the_operators_default_image_comes_last() -> None:
    bare = deployment(snapshot={"image": None})
    assert build_chain(SelectorKind.DEFAULT, "default", bare, "h", default_image="d:1").image == (
        "d:1"
    )
    stack = deployment(snapshot={"image": None}, stack={"runnerImage": "stack:1"})
    chain = build_chain(SelectorKind.DEFAULT, "default", stack, "h", default_image="d:1")
    assert chain.image == "stack:1"


def test_no_image_is_not_runnable() -> None:
    with pytest.raises(NotRunnable, match=r"spec\.snapshot\.image or spec\.stack\.runnerImage"):
        build_chain(SelectorKind.DEFAULT, "default", deployment(snapshot={"image": None}), "h")


def test_chain_round_trips_through_the_job_annotation() -> None:
    source = {"configMap": "src", "sha256": SHA, "files": ["a.py"]}
    dep = deployment(snapshot={"source": source})
    chain = build_chain(SelectorKind.TAG, "stable", dep, "h" * 64)
    manifest = build_job(
        "i", "u", "ns", dep.flow, chain, dep, {}, FlowInvocationSpec(flow=dep.flow)
    )
    assert parse_chain(manifest["metadata"]["annotations"][ANNOTATION_RESOLVED]) == chain
    assert chain.deployment == "research-agent-v2"
    assert chain.snapshot_name == "kitaru::research_agent::v2"
    assert chain.source_sha256 == SHA


@pytest.mark.parametrize("annotation", [None, "", "not json"])
def test_no_chain_without_a_good_annotation(annotation: str | None) -> None:
    assert parse_chain(annotation) is None


@pytest.mark.parametrize(
    ("path", "key"),
    [("a.py", "a.py"), ("flows/a.py", "flows__a.py"), ("p/q/__init__.py", "p__q____init__.py")],
)
def test_source_key(path: str, key: str) -> None:
    assert source_key(path) == key


def test_source_sha256_is_the_sha256sum_manifest_digest() -> None:
    files = {"b.py": b"print(2)\n", "a/x.py": b"x = 1\n"}
    manifest = "".join(
        f"{hashlib.sha256(files[p]).hexdigest()}  {p}\n" for p in sorted(files)
    ).encode()
    assert source_sha256(files) == hashlib.sha256(manifest).hexdigest()
    assert source_sha256(dict(reversed(list(files.items())))) == source_sha256(files)
    assert source_sha256({**files, "b.py": b"print(3)\n"}) != source_sha256(files)
    assert source_sha256({"c.py": files["b.py"], "a/x.py": files["a/x.py"]}) != source_sha256(files)
