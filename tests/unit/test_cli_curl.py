"""`kitaru flow deployments curl` rendering: pinned, shell-safe, no token inlined."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

from kitaru.client.curl import invocations_url, render_curl, token_command
from kitaru.core.idempotency import idempotent_name

BASE: dict[str, Any] = {
    "server": "https://127.0.0.1:6443/",
    "namespace": "team-a",
    "flow": "research_agent",
    "version": 2,
}


SERVER = {"server": BASE["server"], "namespace": BASE["namespace"]}


def _curl_argv(script: str) -> list[str]:
    curl = script[script.index("curl ") :]
    return shlex.split(curl.replace("\\\n", " "))


def test_url_of_the_invocations_collection() -> None:
    assert (
        invocations_url("https://h:6443/", "ns")
        == "https://h:6443/apis/kitaru.dev/v1alpha1/namespaces/ns/flowinvocations"
    )


def test_tag_comments_say_it_is_pinned() -> None:
    script = render_curl(**BASE, tag="stable")
    lines = script.splitlines()
    assert (
        lines[0]
        == "# Tag 'stable' of flow 'research_agent' resolved to v2 when this was generated."
    )
    assert lines[1] == "# This command is pinned to v2; regenerate it if the tag moves."
    assert lines[2] == (
        'KITARU_SERVER_ACCESS_TOKEN="$(KITARU_PROJECT=team-a kitaru auth token '
        '--server https://127.0.0.1:6443)" || exit 1'
    )


def test_version_selector_has_no_regenerate_warning() -> None:
    script = render_curl(**BASE)
    assert "regenerate" not in script
    assert script.startswith("# Starts a new execution of flow 'research_agent' v2.")


def test_body_is_a_flow_invocation_pinned_to_the_version() -> None:
    argv = _curl_argv(render_curl(**BASE, tag="stable", inputs={"topic": 'it\'s "quoted" $HOME'}))
    body = json.loads(argv[argv.index("--data") + 1])
    assert body == {
        "apiVersion": "kitaru.dev/v1alpha1",
        "kind": "FlowInvocation",
        "metadata": {
            "generateName": "research-agent-",
            "labels": {"kitaru.dev/flow": "research_agent"},
        },
        "spec": {
            "flow": "research_agent",
            "version": 2,
            "inputs": {"topic": 'it\'s "quoted" $HOME'},
        },
    }
    assert (
        argv[-1]
        == "https://127.0.0.1:6443/apis/kitaru.dev/v1alpha1/namespaces/team-a/flowinvocations"
    )
    assert argv[argv.index("-X") + 1] == "POST"


def test_an_idempotency_key_becomes_the_invocation_name() -> None:
    script = render_curl(**BASE, tag="stable", idempotency_key="order-42")
    body = json.loads(_curl_argv(script)[_curl_argv(script).index("--data") + 1])
    name = idempotent_name("research_agent", "order-42")
    assert body["metadata"] == {"name": name, "labels": {"kitaru.dev/flow": "research_agent"}}
    assert body["spec"]["idempotencyKey"] == "order-42"
    assert f"# Idempotency key 'order-42': this always creates execution {name};" in script
    assert "409 AlreadyExists" in script


def test_cacert_only_when_the_connection_has_one() -> None:
    assert "--cacert" not in render_curl(**BASE)
    argv = _curl_argv(render_curl(**BASE, ca_file="/path with space/ca.crt"))
    assert argv[argv.index("--cacert") + 1] == "/path with space/ca.crt"


def test_token_is_read_at_run_time_never_inlined() -> None:
    script = render_curl(**BASE)
    assert '"Authorization: Bearer ${KITARU_SERVER_ACCESS_TOKEN}"' in script
    assert "kat_" not in script


def test_the_script_is_valid_shell_and_expands_the_token() -> None:
    script = render_curl(**BASE, tag="stable", inputs={"topic": "a'b; rm -rf /"})
    # Replace the two commands with ones that print what they received.
    probe = script.replace(f"$({token_command(**SERVER)})", "$(echo TOKEN123)").replace(
        "curl --fail", "printf '%s\\n' --fail", 1
    )
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout
    args = out.splitlines()
    assert "Authorization: Bearer TOKEN123" in args
    body = json.loads(args[args.index("--data") + 1])
    assert body["spec"]["inputs"] == {"topic": "a'b; rm -rf /"}


def test_the_script_stops_before_curl_when_no_token_comes() -> None:
    script = render_curl(**BASE).replace(f"$({token_command(**SERVER)})", "$(false)")
    probe = script.replace("curl --fail", "echo CURL-RAN --fail", 1)
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True)
    assert done.returncode == 1 and "CURL-RAN" not in done.stdout


def test_the_token_is_minted_only_for_the_server_and_project_it_calls(tmp_path: Path) -> None:
    """`kitaru auth token` gets the script's server and project: run where another
    server's connection is active, it refuses and curl never runs (a fake `kitaru` on
    PATH records what it was asked)."""
    fake = tmp_path / "kitaru"
    fake.write_text('#!/bin/sh\necho "$KITARU_PROJECT $*" > "$0.args"; exit 1\n')
    fake.chmod(0o755)
    script = render_curl(**{**BASE, "namespace": "it's-a-project"})
    probe = script.replace("curl --fail", "echo CURL-RAN --fail", 1)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "KITARU_PROJECT": "elsewhere"}
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, env=env)
    assert done.returncode == 1 and "CURL-RAN" not in done.stdout
    asked = (tmp_path / "kitaru.args").read_text().strip()
    assert asked == "it's-a-project auth token --server https://127.0.0.1:6443"
