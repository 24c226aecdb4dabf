"""The operator's async client authenticates like the kubernetes client does."""

from __future__ import annotations

from pathlib import Path

import pytest
from kitaru_operator.kube import authorization_header
from kubernetes import client
from kubernetes.config.incluster_config import InClusterConfigLoader


def test_in_cluster_service_account_token_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("sa-token")
    ca.write_text("not checked here")
    configuration = client.Configuration()
    InClusterConfigLoader(token_filename=str(token), cert_filename=str(ca)).load_and_set(
        configuration
    )
    assert authorization_header(configuration) == {"Authorization": "bearer sa-token"}


def test_kubeconfig_token_and_client_certificates() -> None:
    with_token = client.Configuration()
    with_token.api_key = {"authorization": "Bearer user-token"}
    assert authorization_header(with_token) == {"Authorization": "Bearer user-token"}
    assert authorization_header(client.Configuration()) == {}
