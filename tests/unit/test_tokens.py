"""The client identity's rules and tokens (kitaru.core.tokens) and the client's checks
that need no cluster: a token is never minted for a server other than the one asked
for, and never for longer than a day."""

from __future__ import annotations

import pytest
from kitaru.client import KitaruClient
from kitaru.client.connection import Connection, Setting
from kitaru.client.errors import InvalidArguments, KitaruConnectionError
from kitaru.core.manifests import build_client_identity
from kitaru.core.tokens import (
    CLIENT_RULES,
    client_identity_hint,
    extra_grants,
    same_server,
)

SELF_REVIEWS = [
    {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectrulesreviews"],
     "verbs": ["create"]},
    {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"],
     "verbs": ["create"]},
]  # fmt: skip


def test_the_client_role_is_the_client_rules() -> None:
    role = build_client_identity("kitaru-client")[1]
    assert role["rules"] == [rule.wire() for rule in CLIENT_RULES]
    assert extra_grants(role["rules"] + SELF_REVIEWS) == []


@pytest.mark.parametrize(
    ("rule", "extra"),
    [
        ({"apiGroups": ["kitaru.dev"], "resources": ["flowinvocations"], "verbs": ["patch"]},
         ["patch kitaru.dev/flowinvocations"]),
        ({"apiGroups": ["kitaru.dev"], "resources": ["*"], "verbs": ["get"]},
         ["get kitaru.dev/*"]),
        ({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, ["* */*"]),
        ({"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"],
          "resourceNames": ["kitaru-client"]},
         ["create serviceaccounts/token kitaru-client"]),
        ({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]},
         ["get secrets", "list secrets"]),
    ],
)  # fmt: skip
def test_anything_beyond_the_client_role_is_named(rule: dict, extra: list[str]) -> None:
    assert extra_grants([*SELF_REVIEWS, rule]) == extra


def test_the_hint_names_the_client_role_never_the_consumer_role() -> None:
    hint = client_identity_hint("kitaru-client", "team-a")
    assert hint == (
        "kubectl -n team-a create serviceaccount kitaru-client && kubectl -n team-a create "
        "rolebinding kitaru-client --clusterrole=kitaru-client "
        "--serviceaccount=team-a:kitaru-client"
    )


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("https://127.0.0.1:6443", "https://127.0.0.1:6443/", True),
        ("https://API.example.com", "https://api.example.com:443", True),
        ("https://prod.example.com:6443", "https://dev.example.com:6443", False),
        ("https://h:6443", "https://h:6444", False),
        ("http://h", "https://h", False),
    ],
)
def test_servers_compare_by_scheme_host_and_port(a: str, b: str, same: bool) -> None:
    assert same_server(a, b) is same


def offline_client(server: str) -> KitaruClient:
    """A complete connection to a server nobody answers at: a check that makes a request
    would fail with a connection error, not with the refusal asserted."""
    return KitaruClient(
        Connection(
            server=Setting(server, "env KITARU_SERVER_URL"),
            token=Setting("t0k3n-never-sent", "env KITARU_AUTH_TOKEN"),
            project=Setting("team-a", "env KITARU_PROJECT"),
            service_account=Setting("kitaru-client", "env KITARU_SERVICE_ACCOUNT"),
        )
    )


def test_no_token_is_minted_for_another_server() -> None:
    kitaru = offline_client("https://127.0.0.1:9")
    with pytest.raises(KitaruConnectionError) as refused:
        kitaru.auth_token(server="https://prod.example.com:6443")
    assert refused.value.kind == "ServerMismatch"
    assert refused.value.message.startswith(
        "this token would be for https://127.0.0.1:9 (env KITARU_SERVER_URL), not "
        "https://prod.example.com:6443, the server it was asked for"
    )


@pytest.mark.parametrize("seconds", [599, 86401, 7 * 86400])
def test_no_token_lives_longer_than_a_day(seconds: int) -> None:
    with pytest.raises(InvalidArguments, match="a token lives 600 to 86400 seconds"):
        offline_client("https://127.0.0.1:9").auth_token(seconds)
