"""`kitaru flow deployments curl`: a copy-pasteable curl that starts one execution.

The command POSTs a FlowInvocation pinned to the version the selector resolved to
when it was generated. The token comes from `kitaru auth token` when the script runs;
no token is ever written into the text. The script names its server and project to
`kitaru auth token`, which refuses to mint a token when the connection active where the
script runs is another server's: a token is never sent to a server it was not minted
for. Every value is shell-quoted.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any

from kitaru.client.connection import ENV_PROJECT
from kitaru.core.manifests import build_invocation
from kitaru.core.names import API_VERSION, GROUP, INVOCATIONS, shown

TOKEN_VARIABLE = "KITARU_SERVER_ACCESS_TOKEN"


def invocations_url(server: str, namespace: str) -> str:
    return f"{server.rstrip('/')}/apis/{GROUP}/{API_VERSION}/namespaces/{namespace}/{INVOCATIONS}"


def render_curl(
    *,
    server: str,
    namespace: str,
    flow: str,
    version: int,
    inputs: Mapping[str, Any] | None = None,
    tag: str | None = None,
    ca_file: str | None = None,
    split: str | None = None,
    routing_key: str | None = None,
    idempotency_key: str | None = None,
) -> str:
    """The shell text: comments, the token line and the curl (ends with a newline).

    Pinned to `version`, except on a split tag (`split`, e.g. `2=90,3=10`, with `tag`):
    pinning would defeat the split, so the command invokes the tag, with `routing_key`
    when given (the same key, the same version). curl cannot hash, so an idempotency key
    is turned into the invocation's name here, when the command is generated: every run
    of the command POSTs the same name, and the API server answers all but the first
    with 409 AlreadyExists."""
    lines = []
    if split is not None and tag is not None:
        lines.append(
            f"# Tag '{tag}' of flow '{flow}' is split {split} (version=percent): each "
            "execution runs one of them"
            + (", the same for every execution with this routing key." if routing_key else ".")
        )
        invocation = build_invocation(
            flow,
            tag=tag,
            inputs=inputs,
            routing_key=routing_key,
            idempotency_key=idempotency_key,
        )
    else:
        if tag is not None:
            lines += [
                f"# Tag '{tag}' of flow '{flow}' resolved to v{version} when this was generated.",
                f"# This command is pinned to v{version}; regenerate it if the tag moves.",
            ]
        else:
            lines.append(f"# Starts a new execution of flow '{flow}' v{version}.")
        invocation = build_invocation(
            flow, version=version, inputs=inputs, idempotency_key=idempotency_key
        )
    if idempotency_key is not None:
        name = invocation["metadata"]["name"]
        lines += [
            f"# Idempotency key {shown(idempotency_key)}: this always creates execution {name};",
            f"# run again, it fails with 409 AlreadyExists (see: kitaru executions get {name}).",
        ]
    body = json.dumps(invocation, separators=(",", ":"))
    args = ["curl", "--fail-with-body", "--silent", "--show-error", "-X", "POST"]
    if ca_file:
        args += ["--cacert", shlex.quote(ca_file)]
    args += [
        "-H",
        f'"Authorization: Bearer ${{{TOKEN_VARIABLE}}}"',
        "-H",
        shlex.quote("Content-Type: application/json"),
        "--data",
        shlex.quote(body),
        shlex.quote(invocations_url(server, namespace)),
    ]
    # No token, no request: stop before curl rather than send an empty bearer.
    lines.append(f'{TOKEN_VARIABLE}="$({token_command(server, namespace)})" || exit 1')
    lines.append(" \\\n  ".join(_pairs(args)))
    return "\n".join(lines) + "\n"


def token_command(server: str, namespace: str) -> str:
    """`kitaru auth token` for the project the script invokes in, refused unless the
    active connection's server is the one the script calls."""
    project = f"{ENV_PROJECT}={shlex.quote(namespace)}"
    return f"{project} kitaru auth token --server {shlex.quote(server.rstrip('/'))}"


def _pairs(args: list[str]) -> list[str]:
    """Group options with their values, one per continuation line."""
    groups: list[str] = [" ".join(args[:6])]
    rest = args[6:]
    while rest:
        if rest[0].startswith("-") and len(rest) > 1:
            groups.append(f"{rest[0]} {rest[1]}")
            rest = rest[2:]
        else:
            groups.append(rest[0])
            rest = rest[1:]
    return groups
