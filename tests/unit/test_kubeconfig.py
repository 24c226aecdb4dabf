"""Kubeconfig loading follows kubectl's rules: merged `$KUBECONFIG`, contexts, exec plugins."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from kitaru.client.connection import combine, load_kube_context
from kitaru.client.errors import KitaruConnectionError
from kitaru.client.kube import build_api_client
from kitaru.kubeconfig import KubeContext, current_context, load_configuration
from kitaru_operator.kube import authorization_header


def kubeconfig(
    current: str | None,
    contexts: dict[str, dict[str, Any]],
    clusters: dict[str, dict[str, Any]],
    users: dict[str, dict[str, Any]],
) -> str:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "contexts": [{"name": n, "context": c} for n, c in contexts.items()],
        "clusters": [{"name": n, "cluster": c} for n, c in clusters.items()],
        "users": [{"name": n, "user": u} for n, u in users.items()],
    }
    if current is not None:
        body["current-context"] = current
    return json.dumps(body)  # JSON is YAML


@pytest.fixture
def two_files(tmp_path: Path) -> str:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "ca.crt").write_text("a CA file (not parsed here)")
    (second / "s.crt").write_text("a CA file (not parsed here)")
    (first / "config").write_text(
        kubeconfig(
            "dev",
            {
                "dev": {"cluster": "shared", "user": "me", "namespace": "team"},
                "staging": {"cluster": "staging", "user": "me"},
            },
            {"shared": {"server": "https://first:6443", "certificate-authority": "ca.crt"}},
            {"me": {"token": "first-token"}},
        )
    )
    (second / "config").write_text(
        kubeconfig(
            "prod",
            {
                "prod": {"cluster": "prod", "user": "ops", "namespace": "production"},
                "dev": {"cluster": "prod", "user": "ops", "namespace": "ignored"},
            },
            {
                "shared": {"server": "https://second:6443"},
                "prod": {"server": "https://prod:6443"},
                "staging": {"server": "https://staging:6443", "certificate-authority": "s.crt"},
            },
            {"me": {"token": "second-token"}, "ops": {"token": "ops-token"}},
        )
    )
    missing = tmp_path / "absent"
    return os.pathsep.join(str(p) for p in (first / "config", missing, second / "config"))


def test_current_context_comes_from_the_first_file_that_sets_it(two_files: str) -> None:
    first = two_files.split(os.pathsep)[0]
    assert current_context(two_files) == KubeContext(
        path=two_files,
        context="dev",
        server="https://first:6443",
        namespace="team",
        ca_file=str(Path(first).parent / "ca.crt"),
        has_credentials=True,
    )


def test_first_file_wins_for_each_name_and_paths_are_relative_to_their_file(
    two_files: str,
) -> None:
    staging = current_context(two_files, "staging")
    assert staging is not None
    assert staging.server == "https://staging:6443"  # defined only in the second file
    second = two_files.split(os.pathsep)[-1]
    assert staging.ca_file == str(Path(second).parent / "s.crt")
    configuration = load_configuration(two_files, "staging")
    assert authorization_header(configuration) == {"Authorization": "Bearer first-token"}


def test_a_later_file_without_current_context_does_not_unset_it(tmp_path: Path) -> None:
    only = tmp_path / "only"
    only.write_text(kubeconfig(None, {"x": {"cluster": "x"}}, {"x": {"server": "https://x"}}, {}))
    main = tmp_path / "main"
    main.write_text(kubeconfig("x", {}, {}, {}))
    found = current_context(os.pathsep.join([str(only), str(main)]))
    assert found is not None and found.context == "x" and not found.has_credentials


def test_client_takes_context_namespace_and_credentials(two_files: str) -> None:
    kube = load_kube_context({"KUBECONFIG": two_files})
    conn = combine({}, None, kube)
    assert conn.server.value == "https://first:6443"
    assert conn.project.value == "team"
    assert conn.uses_kubeconfig_credentials
    header = build_api_client(conn).configuration.get_api_key_with_prefix("BearerToken")
    assert header == "Bearer first-token"


def test_no_kubeconfig_and_unreadable_kubeconfig(tmp_path: Path) -> None:
    assert load_kube_context({"KUBECONFIG": str(tmp_path / "none")}) is None
    broken = tmp_path / "broken"
    broken.write_text("clusters: [")
    with pytest.raises(KitaruConnectionError, match="cannot read kubeconfig"):
        load_kube_context({"KUBECONFIG": str(broken)})


PLUGIN = """\
import json, pathlib, sys
calls = pathlib.Path(sys.argv[1])
count = int(calls.read_text()) + 1 if calls.exists() else 1
calls.write_text(str(count))
print(json.dumps({
    "apiVersion": "client.authentication.k8s.io/v1",
    "kind": "ExecCredential",
    "status": {"token": f"exec-token-{count}", "expirationTimestamp": sys.argv[2]},
}))
"""


def exec_kubeconfig(tmp_path: Path, expires: str) -> Path:
    (tmp_path / "plugin.py").write_text(PLUGIN)
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(tmp_path / "plugin.py"), str(tmp_path / "calls"), expires],
            "interactiveMode": "Never",
        }
    }
    path = tmp_path / "config"
    path.write_text(
        kubeconfig(
            "cloud",
            {"cloud": {"cluster": "cloud", "user": "sso", "namespace": "flows"}},
            {"cloud": {"server": "https://cloud:6443"}},
            {"sso": user},
        )
    )
    return path


def test_exec_plugin_token_is_used_and_renewed_when_it_expires(tmp_path: Path) -> None:
    path = exec_kubeconfig(tmp_path, "2000-01-01T00:00:00Z")
    configuration = load_configuration(str(path))
    assert (tmp_path / "calls").read_text() == "1"
    # Expired: every request asks the plugin again (the operator reads it per request).
    assert authorization_header(configuration) == {"Authorization": "Bearer exec-token-2"}
    assert authorization_header(configuration) == {"Authorization": "Bearer exec-token-3"}


def test_exec_plugin_token_is_kept_until_it_expires(tmp_path: Path) -> None:
    path = exec_kubeconfig(tmp_path, "2999-01-01T00:00:00Z")
    conn = combine({}, None, load_kube_context({"KUBECONFIG": str(path)}))
    assert conn.project.value == "flows"
    api_client = build_api_client(conn)
    for _ in range(2):
        assert api_client.configuration.get_api_key_with_prefix("BearerToken") == (
            "Bearer exec-token-1"
        )
    assert (tmp_path / "calls").read_text() == "1"


def test_no_current_context_or_an_unknown_one(tmp_path: Path) -> None:
    path = tmp_path / "config"
    clusters = {"c": {"server": "https://c"}}
    path.write_text(kubeconfig("", {"dev": {"cluster": "c"}}, clusters, {}))
    assert current_context(str(path)) is None
    path.write_text(kubeconfig("nope", {"dev": {"cluster": "c"}}, clusters, {}))
    assert current_context(str(path)) is None
