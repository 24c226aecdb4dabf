"""The rules of who may talk to `kitaru ui` and `kitaru mcp` over HTTP: host names,
origins, form tokens, the user an authenticating proxy names, and where each server may
listen. The attacks against the real servers: tests/security/."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from kitaru.cli.main import main
from kitaru.ui.security import (
    CsrfTokens,
    Identity,
    ProxyAuth,
    Refused,
    cross_origin_problem,
    exposure_problem,
)
from kitaru.web_security import allowed_hosts, host_name, is_loopback
from starlette.datastructures import Headers

SECRET = b"s" * 40


def headers(*pairs: tuple[str, str]) -> Headers:
    return Headers(raw=[(k.lower().encode(), v.encode()) for k, v in pairs])


@pytest.mark.parametrize(
    ("netloc", "name"),
    [
        ("127.0.0.1:8080", "127.0.0.1"),
        ("Kitaru.Example.COM", "kitaru.example.com"),
        ("[::1]:8080", "::1"),
        ("[::1]", "::1"),
        ("localhost:80", "localhost"),
        ("", ""),
    ],
)
def test_host_name_drops_the_port(netloc: str, name: str) -> None:
    assert host_name(netloc) == name


def test_loopback_names_and_the_bound_address_are_allowed() -> None:
    assert allowed_hosts("127.0.0.1") == {"localhost", "127.0.0.1", "::1"}
    assert allowed_hosts("0.0.0.0", ["Kitaru.test:8443"]) == {
        "localhost",
        "127.0.0.1",
        "::1",
        "kitaru.test",
    }
    assert "10.0.0.5" in allowed_hosts("10.0.0.5")
    assert "::" not in allowed_hosts("::")
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.0.1", "::1", "[::1]", "LOCALHOST"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.244.0.1", "example.com", ""))


def test_a_sidecar_proxy_is_believed_on_loopback_only() -> None:
    proxy = ProxyAuth(allowed_groups=frozenset({"team-a"}))
    named = headers(("X-Forwarded-User", "alice"), ("X-Forwarded-Groups", "team-a, team-b"))
    assert proxy.identify(named, "127.0.0.1") == Identity("alice", ("team-a",))
    for peer in ("10.244.0.7", None):
        with pytest.raises(Refused) as refused:
            proxy.identify(named, peer)
        assert refused.value.status == 401


def test_an_external_proxy_is_believed_with_its_secret_only() -> None:
    proxy = ProxyAuth(secret=SECRET)
    named = [("X-Forwarded-User", "alice")]
    with_secret = headers(*named, ("X-Kitaru-Proxy-Secret", SECRET.decode()))
    assert proxy.identify(with_secret, "10.244.0.7") == Identity("alice")
    for sent in (headers(*named), headers(*named, ("X-Kitaru-Proxy-Secret", "guess"))):
        with pytest.raises(Refused) as refused:
            proxy.identify(sent, "127.0.0.1")  # loopback proves nothing here
        assert refused.value.status == 401


def test_groups_are_the_allowed_ones_of_every_header_value() -> None:
    proxy = ProxyAuth(groups_header="X-Auth-Groups", allowed_groups=frozenset({"a", "b", "c"}))
    sent = headers(
        ("X-Forwarded-User", "bob"),
        ("X-Auth-Groups", "a,zz"),
        ("X-Auth-Groups", " c "),
    )
    assert proxy.identify(sent, "::1") == Identity("bob", ("a", "c"))


@pytest.mark.parametrize(
    ("sent", "status"),
    [
        ([], 401),
        ([("X-Forwarded-User", "  ")], 401),
        ([("X-Forwarded-User", "system:admin")], 403),
        ([("X-Forwarded-User", "System:kube-controller-manager")], 403),
    ],
)
def test_no_user_or_a_kubernetes_system_user_is_refused(
    sent: list[tuple[str, str]], status: int
) -> None:
    with pytest.raises(Refused) as refused:
        ProxyAuth().identify(headers(*sent), "127.0.0.1")
    assert refused.value.status == status


def test_system_groups_are_never_passed_on() -> None:
    proxy = ProxyAuth(allowed_groups=frozenset({"team-a"}))
    sent = headers(("X-Forwarded-User", "alice"), ("X-Forwarded-Groups", "system:masters,team-a"))
    assert proxy.identify(sent, "127.0.0.1").groups == ("team-a",)


def test_where_the_dashboard_may_listen() -> None:
    assert exposure_problem("127.0.0.1", None) is None
    assert exposure_problem("::1", ProxyAuth()) is None
    assert "keep the dashboard on loopback" in (exposure_problem("0.0.0.0", None) or "")
    assert "needs --proxy-secret-file" in (exposure_problem("0.0.0.0", ProxyAuth()) or "")
    assert exposure_problem("0.0.0.0", ProxyAuth(secret=SECRET)) is None


@pytest.mark.parametrize(
    ("sent", "problem"),
    [
        ([("Origin", "http://127.0.0.1:8080")], None),
        ([("Referer", "http://127.0.0.1:8080/flows/x")], None),
        ([("Origin", "https://127.0.0.1:8080")], None),  # a proxy in front terminates TLS
        ([("Origin", "http://attacker.example")], "cross-origin request refused"),
        ([("Origin", "http://127.0.0.1:9999")], "cross-origin request refused"),
        ([("Referer", "http://attacker.example/x")], "cross-origin request refused"),
        ([("Origin", "null")], "names no Origin"),
        ([], "names no Origin"),
    ],
)
def test_state_changes_come_from_the_dashboards_own_pages(
    sent: list[tuple[str, str]], problem: str | None
) -> None:
    found = cross_origin_problem(headers(("Host", "127.0.0.1:8080"), *sent))
    assert (found is None) if problem is None else (problem in (found or ""))


def test_a_form_token_belongs_to_one_cookie_and_one_user() -> None:
    tokens = CsrfTokens()
    cookie = tokens.new_cookie()
    token = tokens.token(cookie, "alice")
    assert tokens.valid(cookie, "alice", token)
    assert not tokens.valid(tokens.new_cookie(), "alice", token)
    assert not tokens.valid(cookie, "bob", token)
    assert not tokens.valid("", "alice", tokens.token("", "alice"))
    assert not CsrfTokens().valid(cookie, "alice", token), "another process's key"


def test_the_cli_refuses_an_exposed_dashboard_before_serving(tmp_path: Path) -> None:
    runner = CliRunner()
    exposed = runner.invoke(main, ["ui", "--host", "0.0.0.0"])
    assert exposed.exit_code == 1
    assert "keep the dashboard on loopback" in exposed.output
    short = tmp_path / "secret"
    short.write_text("too-short\n")
    weak = runner.invoke(main, ["ui", "--auth-proxy", "--proxy-secret-file", str(short)])
    assert weak.exit_code == 1 and "use at least 32 random characters" in weak.output
    loose = runner.invoke(main, ["ui", "--proxy-secret-file", str(short)])
    assert loose.exit_code == 1 and "apply to --auth-proxy" in loose.output
    system = runner.invoke(main, ["ui", "--auth-proxy", "--allow-group", "system:masters"])
    assert system.exit_code == 1 and "never acts as a Kubernetes system group" in system.output


def test_the_mcp_server_refuses_a_weak_token(tmp_path: Path) -> None:
    short = tmp_path / "token"
    short.write_text("abc")
    argv = ["mcp", "--transport", "streamable-http", "--host", "0.0.0.0"]
    refused = CliRunner().invoke(main, [*argv, "--token-file", str(short)])
    assert refused.exit_code == 1 and "use at least 32 random ones" in refused.output
    from_env = CliRunner().invoke(main, argv, env={"KITARU_MCP_TOKEN": "abc"})
    assert from_env.exit_code == 1 and "KITARU_MCP_TOKEN has 3 characters" in from_env.output
