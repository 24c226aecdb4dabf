"""Every DESIGN §3 error case through the CLI: its message, exit 1, the JSON envelope on
stderr, and nothing created."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes
import pytest
from cli_support import FLOWS_AND_MORE, Kitaru, new_project
from kitaru.core.manifests import build_deployment
from support import kubectl


def snapshot(namespace: str) -> dict[str, list[str]]:
    """The names of everything the CLI could create."""
    kinds = {}
    for kind in ("fdep", "froute", "finv", "configmaps"):
        names = kubectl("get", kind, "-o", "name", namespace=namespace).stdout.split()
        kinds[kind] = sorted(n for n in names if "kube-root-ca" not in n)
    return kinds


def fails(kitaru: Kitaru, command: str, kind: str, fragment: str) -> None:
    """The command fails with exit 1: text on stderr, and the JSON envelope with -o json."""
    text = kitaru(command, check=False)
    assert text.code == 1, text
    assert text.out == ""
    assert text.err.startswith("Error: ") and fragment in text.err, text.err
    envelope = kitaru(command + " -o json", check=False)
    assert envelope.code == 1
    error = json.loads(envelope.err)
    assert command.startswith(error["command"]), error
    assert error["error"]["type"] == kind, error
    assert fragment in error["error"]["message"]


@pytest.fixture
def kitaru(running_operator: object, namespace: str, tmp_path: Path) -> Kitaru:
    project = new_project(tmp_path, namespace, FLOWS_AND_MORE)
    project('deploy flows/research.py:research_agent --input \'{"topic": "t"}\'')
    project(
        "deploy flows/research.py:research_agent --tag canary --exclusive "
        '--input \'{"topic": "t"}\''
    )
    project("flow tag research_agent benchmark --version 1")
    project("flow tag research_agent benchmark --version 2")
    return project


def test_deploy_and_routing_errors_create_nothing(kitaru: Kitaru, namespace: str) -> None:
    before = snapshot(namespace)
    cases = [
        (
            "deploy flows/research.py:research_agent --tag Bad_Tag",
            "InvalidName",
            "invalid tag 'Bad_Tag'",
        ),
        ("deploy flows/research.py:BadName", "InvalidName", "invalid flow name 'BadName'"),
        (
            "deploy flows/research.py:research_agent --input '{\"topic\": 3}'",
            "InvalidInputs",
            "input 'topic'",
        ),
        (
            "deploy flows/research.py:research_agent --input '{\"colour\": 1}'",
            "InvalidInputs",
            "colour",
        ),
        (
            "deploy flows/research.py:research_agent --input '[1]'",
            "InvalidInputs",
            "must be a JSON object",
        ),
        ("deploy flows/research.py:missing", "InvalidTarget", "has no attribute 'missing'"),
        ("deploy flows/nope.py:research_agent", "InvalidTarget", "no such file"),
        ("flow tag research_agent stable --version 9", "VersionNotFound", "has no version 9"),
        ("flow untag research_agent default", "TagError", "cannot be removed, only moved"),
        ("flow untag research_agent nope", "TagNotFound", "has no tag 'nope'"),
        ("flow untag research_agent benchmark", "AmbiguousTag", "pass --version"),
        ("flow deployments delete research_agent --version 2", "Rejected", "canary"),
        ("flow deployments delete research_agent --version 1", "Rejected", "default"),
        ("flow deployments delete research_agent --version 7", "VersionNotFound", "no version 7"),
    ]
    for command, kind, fragment in cases:
        fails(kitaru, command, kind, fragment)
    assert snapshot(namespace) == before


def test_invoke_errors_create_nothing(kitaru: Kitaru, namespace: str) -> None:
    before = snapshot(namespace)
    cases = [
        ("invoke unknown_flow", "NoDeployments", "flow 'unknown_flow' has no deployments yet"),
        ("invoke research_agent --tag nope", "TagNotFound", "has no tag 'nope'"),
        ("invoke research_agent --version 9", "VersionNotFound", "has no version 9"),
        ("invoke research_agent --tag benchmark", "AmbiguousTag", "routes to versions 1, 2"),
        ("invoke research_agent --tag canary --version 2", "ConflictingSelectors", "not both"),
        ('invoke research_agent --input \'{"depth": "deep"}\'', "InvalidInputs", "input 'depth'"),
        ("invoke research_agent --input '{\"extra\": 1}'", "InvalidInputs", "extra"),
        ("invoke research_agent --input 'not json'", "InvalidInputs", "not valid JSON"),
        (
            "flow deployments curl research_agent --tag benchmark",
            "AmbiguousTag",
            "routes to versions",
        ),
        ("executions get nope-12345", "ExecutionNotFound", "not found"),
    ]
    for command, kind, fragment in cases:
        fails(kitaru, command, kind, fragment)
    assert snapshot(namespace) == before


def test_invoke_without_a_default_route(
    namespace: str, tmp_path: Path, k8s: kubernetes.client.ApiClient
) -> None:
    """Deployments created without the operator (so nobody set `default`)."""
    project = new_project(tmp_path, namespace)
    body = build_deployment(
        "research_agent",
        1,
        entrypoint="research:research_agent",
        image="ghcr.io/kitaru-k8s/runner:0.1.0",
    )
    kubernetes.client.CustomObjectsApi(k8s).create_namespaced_custom_object(
        "kitaru.dev", "v1alpha1", namespace, "flowdeployments", body
    )
    before = snapshot(namespace)
    fails(project, "invoke research_agent", "NoDefaultRoute", "none is routed as 'default'")
    assert snapshot(namespace) == before


def test_delete_flow_removes_routes_and_versions(kitaru: Kitaru, namespace: str) -> None:
    fails(kitaru, "flow show nothing_here", "NoDeployments", "no deployments")
    deleted = kitaru("flow delete research_agent --yes -o json").json()["item"]
    assert deleted["versions"] == [1, 2]
    assert set(deleted["tags"]) == {"benchmark", "canary", "default"}
    after = snapshot(namespace)
    assert after["fdep"] == [] and after["froute"] == []
    assert kitaru("flow list").out == "No flows deployed in this project.\n"
