"""Connection resolution: each value from env, saved login or kubeconfig, with its source."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from kitaru.client.connection import (
    Connection,
    KubeContext,
    SavedConnection,
    Setting,
    combine,
    load_saved,
    mask,
    save_connection,
)
from kitaru.client.errors import KitaruConnectionError

ENV = {
    "KITARU_SERVER_URL": "https://env.example.com",
    "KITARU_AUTH_TOKEN": "kat_env_token_123456",
    "KITARU_PROJECT": "env-project",
}
SAVED = SavedConnection(
    server="https://saved.example.com",
    token="kat_saved_token_1234",
    project="saved-project",
    ca_file="/etc/saved-ca.crt",
    service_account="saved-sa",
)
KUBE = KubeContext(
    path="/home/me/.kube/config",
    context="dev",
    server="https://kube.example.com",
    namespace="kube-ns",
    ca_data=base64.b64encode(b"PEM").decode(),
    has_credentials=True,
)


def test_environment_wins_over_everything() -> None:
    conn = combine(ENV, SAVED, KUBE)
    assert conn.server == Setting("https://env.example.com", "env KITARU_SERVER_URL")
    assert conn.token == Setting("kat_env_token_123456", "env KITARU_AUTH_TOKEN")
    assert conn.project == Setting("env-project", "env KITARU_PROJECT")
    assert not conn.uses_kubeconfig_credentials
    assert conn.missing() == []


def test_saved_login_wins_over_kubeconfig() -> None:
    conn = combine({}, SAVED, KUBE, saved_path="/cfg/connection.json")
    assert conn.server.value == "https://saved.example.com"
    assert conn.token.value == "kat_saved_token_1234"
    assert conn.project.value == "saved-project"
    assert conn.ca_file.value == "/etc/saved-ca.crt"
    assert conn.service_account.value == "saved-sa"
    assert conn.server.source == "kitaru login (/cfg/connection.json)"
    assert conn.ca_data is None


def test_kubeconfig_alone_gives_a_complete_connection() -> None:
    conn = combine({}, None, KUBE)
    assert conn.server.value == "https://kube.example.com"
    assert conn.uses_kubeconfig_credentials
    assert conn.project == Setting("kube-ns", "kubeconfig context 'dev' (/home/me/.kube/config)")
    assert conn.ca_data == KUBE.ca_data
    assert conn.missing() == []


def test_kubeconfig_without_namespace_means_default() -> None:
    kube = KubeContext(path="/k", context="c", server="https://k", namespace=None)
    conn = combine({}, None, kube)
    assert conn.project.value == "default"
    assert "no namespace set" in conn.project.source


def test_only_the_project_from_the_environment_keeps_kubeconfig_auth() -> None:
    conn = combine({"KITARU_PROJECT": "p"}, None, KUBE)
    assert conn.project.value == "p"
    assert conn.uses_kubeconfig_credentials


def test_a_saved_token_is_never_sent_to_another_server() -> None:
    conn = combine({"KITARU_SERVER_URL": "https://other.example.com"}, SAVED, None)
    assert not conn.token.is_set
    assert not conn.ca_file.is_set
    assert conn.missing() == ["no credentials for https://other.example.com: set KITARU_AUTH_TOKEN"]


def test_kubeconfig_credentials_are_not_used_for_another_server() -> None:
    conn = combine({"KITARU_SERVER_URL": "https://other.example.com"}, None, KUBE)
    assert not conn.uses_kubeconfig_credentials
    assert conn.ca_data is None


def test_nothing_configured_names_every_setting() -> None:
    conn = combine({}, None, None)
    with pytest.raises(KitaruConnectionError) as err:
        conn.require()
    message = str(err.value)
    assert "KITARU_SERVER_URL" in message
    assert "kitaru login" in message
    assert "KITARU_PROJECT" in message


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"KITARU_SERVER_URL": "https://s", "KITARU_AUTH_TOKEN": "t"}, "KITARU_PROJECT"),
        ({"KITARU_SERVER_URL": "https://s", "KITARU_PROJECT": "p"}, "KITARU_AUTH_TOKEN"),
        ({"KITARU_AUTH_TOKEN": "t", "KITARU_PROJECT": "p"}, "KITARU_SERVER_URL"),
    ],
)
def test_one_missing_piece_is_named(env: dict[str, str], missing: str) -> None:
    problems = combine(env, None, None).missing()
    assert len(problems) == 1
    assert missing in problems[0]


def test_service_account_and_ca_file_from_the_environment() -> None:
    conn = combine(
        {**ENV, "KITARU_SERVICE_ACCOUNT": "ci", "KITARU_CA_FILE": "/ca.pem"}, SAVED, None
    )
    assert conn.service_account == Setting("ci", "env KITARU_SERVICE_ACCOUNT")
    assert conn.ca_file == Setting("/ca.pem", "env KITARU_CA_FILE")


@pytest.mark.parametrize(
    ("secret", "shown"),
    [
        ("kat_abc123", "********"),
        ("kat_abcdefghijklmnop", "kat_********"),
        ("", ""),
        (None, ""),
    ],
)
def test_mask_never_shows_the_token(secret: str | None, shown: str) -> None:
    assert mask(secret) == shown


def test_describe_masks_the_token_and_names_sources() -> None:
    rows = {r["name"]: r for r in combine(ENV, None, None).describe()}
    assert rows["auth token"]["value"] == "kat_********"
    assert "kat_env_token_123456" not in json.dumps(rows)
    assert rows["server"]["source"] == "env KITARU_SERVER_URL"
    kube_rows = {r["name"]: r for r in combine({}, None, KUBE).describe()}
    assert kube_rows["auth token"]["value"] == "(kubeconfig credentials)"
    assert kube_rows["ca file"]["value"] == "(embedded)"


def test_saved_connection_round_trip_with_mode_600(tmp_path: Path) -> None:
    path = tmp_path / "kitaru" / "connection.json"
    save_connection(SAVED, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_saved(path) == SAVED


def test_missing_saved_connection_is_none(tmp_path: Path) -> None:
    assert load_saved(tmp_path / "nope.json") is None


def test_corrupt_saved_connection_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "connection.json"
    path.write_text("{not json")
    with pytest.raises(KitaruConnectionError, match="cannot read the saved connection"):
        load_saved(path)


def test_embedded_ca_is_written_once_for_curl(tmp_path: Path) -> None:
    conn = combine({}, None, KUBE)
    path = conn.ca_path(tmp_path)
    assert path is not None
    assert Path(path).read_bytes() == b"PEM"
    assert conn.ca_path(tmp_path) == path
    assert Connection(ca_file=Setting("/x.pem", "env")).ca_path(tmp_path) == "/x.pem"
    assert Connection().ca_path(tmp_path) is None


def test_policy_denials_keep_only_the_policys_own_words() -> None:
    from kitaru.client.kube import policy_message

    framed = (
        'flowdeployments.kitaru.dev "research-agent-v2" is forbidden: '
        "ValidatingAdmissionPolicy 'kitaru-protect-exclusive-versions' with binding "
        "'kitaru-protect-exclusive-versions' denied request: version 2 of flow research_agent "
        "holds the exclusive tag stable; move the tag to another version first"
    )
    assert policy_message(framed).startswith("version 2 of flow research_agent holds")
    assert policy_message("something else") == "something else"


# As the API server answered right after `kubectl apply -f crds/` (issue 23, item 9).
STARTING = (
    'The flowdeployments "probe-v1" is invalid: : ValidatingAdmissionPolicy '
    "'kitaru-never-reuse-versions' with binding 'kitaru-never-reuse-versions' denied request: "
    "failed to configure policy: failed to find resource referenced by paramKind: "
    "'kitaru.dev/v1alpha1, Kind=FlowRoute'"
)


class _Refusal(Exception):
    """What the kubernetes client raises: a status and the API server's JSON body."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.status, self.reason = 422, "Unprocessable Entity"
        self.body = json.dumps({"kind": "Status", "message": message})


def test_policies_still_starting_read_as_retry_in_a_few_seconds() -> None:
    from kitaru.client.errors import PoliciesStarting, Rejected
    from kitaru.client.kube import translate

    error = translate(_Refusal(STARTING), "flowdeployments probe-v1")
    assert isinstance(error, PoliciesStarting) and isinstance(error, Rejected)
    assert error.kind == "PoliciesStarting"
    assert "admission policies are still starting" in error.message
    assert "kitaru-never-reuse-versions" in error.message
    assert error.message.endswith("retry in a few seconds")
    other = translate(
        _Refusal("ValidatingAdmissionPolicy 'x' with binding 'x' denied request: no"), "x"
    )
    assert type(other) is Rejected and other.message == "no"


def test_writes_wait_while_the_policies_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from kitaru.client import kube
    from kitaru.client.errors import PoliciesStarting
    from kitaru.core.backoff import Backoff

    monkeypatch.setattr(kube, "POLICIES_STARTING", Backoff(base=0.001, cap=0.001, attempts=4))
    calls: list[int] = []

    def refused_twice() -> str:
        calls.append(1)
        if len(calls) <= 2:
            raise PoliciesStarting("starting")
        return "created"

    assert kube._while_policies_start(refused_twice) == "created" and len(calls) == 3

    def always_refused() -> str:
        raise PoliciesStarting("starting")

    with pytest.raises(PoliciesStarting):
        kube._while_policies_start(always_refused)
