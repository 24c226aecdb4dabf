"""`kitaru`: deploy flows as versions, route tags to them, invoke them, follow executions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from kitaru.cli.base import (
    OUTPUT_HELP,
    KitaruGroup,
    client,
    idempotency_key_option,
    input_option,
    is_json,
    kitaru_command,
    retention_options,
    tag_option,
    version_option,
)
from kitaru.cli.executions import executions
from kitaru.cli.flows import flow
from kitaru.cli.output import JSON, TEXT, Output, fields, parse_inputs, result_text, spinner, table
from kitaru.cli.schedules import schedule
from kitaru.client.errors import InvalidArguments, KitaruError
from kitaru.core.names import shown
from kitaru.core.retention import Retention
from kitaru.core.tokens import CLIENT_TOKEN_MAX_SECONDS, CLIENT_TOKEN_MIN_SECONDS

# The environment variable with the MCP HTTP server's bearer token.
MCP_TOKEN_ENV = "KITARU_MCP_TOKEN"
# Shared secrets and tokens shorter than this are refused (32 hex digits: 128 bits).
MIN_TOKEN_LENGTH = 32

if TYPE_CHECKING:
    from kitaru.ui.security import ProxyAuth

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=KitaruGroup, context_settings=CONTEXT)
@click.option("-o", "--output", type=click.Choice([TEXT, JSON]), default=None, help=OUTPUT_HELP)
@click.version_option(package_name="kitaru-k8s", prog_name="kitaru")
def main(output: str | None) -> None:
    """Kitaru on Kubernetes: immutable flow versions, routing tags, invocations.

    Connection: KITARU_SERVER_URL, KITARU_AUTH_TOKEN, KITARU_PROJECT; else
    `kitaru login`; else the current kubeconfig context. See `kitaru info`.
    """


main.add_command(flow)
main.add_command(executions)
main.add_command(schedule)


# --- project and deploy ----------------------------------------------------------------


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=".")
@kitaru_command
def init(directory: Path) -> Output:
    """Make DIRECTORY (default: here) a Kitaru project (creates .kitaru/)."""
    from kitaru.client.source import PROJECT_MARKER

    marker = directory.resolve() / PROJECT_MARKER
    existed = marker.is_dir()
    marker.mkdir(parents=True, exist_ok=True)
    (marker / ".gitignore").write_text("# local Kitaru state; nothing to commit\n*\n")
    verb = "Already a Kitaru project" if existed else "Initialized a Kitaru project"
    return Output(
        item={"project": str(marker.parent), "created": not existed},
        text=f"{verb}: {marker.parent} ({PROJECT_MARKER}/)",
    )


def _require_project(target: str) -> None:
    from kitaru.client.source import (
        PROJECT_MARKER,
        check_target_in,
        find_project_root,
        parse_target,
    )

    project = find_project_root(Path.cwd())
    if project is None:
        raise InvalidArguments(
            f"not in a Kitaru project: run `kitaru init` in your repository first "
            f"(no {PROJECT_MARKER}/ in {Path.cwd()} or its parents)",
            kind="NotAProject",
        )
    check_target_in(parse_target(target)[0], project)


def _deployed_text(info: object) -> str:
    from kitaru.client import DeploymentInfo

    assert isinstance(info, DeploymentInfo)
    tags = ", ".join(t.tag for t in info.tags) or "(untagged)"
    return f"Deployed {info.flow} v{info.version} ({info.snapshot_name})\n" + fields(
        {
            "tags": tags,
            "image": info.image or info.runner_image,
            "source": f"{info.source_config_map} sha256:{info.source_sha256}",
        }
    )


@main.command()
@click.argument("target", metavar="FILE.py:FLOW")
@input_option
@click.option("--tag", default=None, help="The one tag this version gets (default: 'default').")
@click.option("--exclusive", is_flag=True, help="Move the tag here from other versions.")
@click.option("--image", default=None, help="Prebuilt image to run instead of the runner image.")
@click.option(
    "--force",
    is_flag=True,
    help="Take the tag even if this version rejects inputs its current version accepts.",
)
@click.option(
    "--max-concurrency",
    type=int,
    default=None,
    metavar="N",
    help="At most N runs through the tag active at once (kitaru flow limit --tag).",
)
@retention_options("this version")
@kitaru_command
def deploy(
    target: str,
    input_: str | None,
    tag: str | None,
    exclusive: bool,
    image: str | None,
    force: bool,
    max_concurrency: int | None,
    ttl_seconds_after_finished: int | None,
    history_limit: int | None,
) -> Output:
    """Deploy a flow from source as its next version, with one tag.

    The tag (`default` without --tag) must keep accepting what its callers send: a
    version whose inputs would reject theirs is refused before anything is created,
    unless --force.
    """
    retention = Retention(ttl_seconds_after_finished, history_limit)
    return _new_version(
        target,
        input_,
        image,
        retention,
        tag=tag,
        exclusive=exclusive,
        force=force,
        max_concurrency=max_concurrency,
    )


@main.command()
@click.argument("target", metavar="FILE.py:FLOW")
@input_option
@click.option("--image", default=None, help="Prebuilt image to run instead of the runner image.")
@retention_options("this version")
@kitaru_command
def build(
    target: str,
    input_: str | None,
    image: str | None,
    ttl_seconds_after_finished: int | None,
    history_limit: int | None,
) -> Output:
    """Build a flow from source as its next version, without a tag."""
    retention = Retention(ttl_seconds_after_finished, history_limit)
    return _new_version(target, input_, image, retention, untagged=True)


def _new_version(
    target: str,
    input_: str | None,
    image: str | None,
    retention: Retention,
    *,
    tag: str | None = None,
    exclusive: bool = False,
    untagged: bool = False,
    force: bool = False,
    max_concurrency: int | None = None,
) -> Output:
    """`deploy` and `build`: the next version of the flow in `target`, routed as asked."""
    inputs = parse_inputs(input_)
    _require_project(target)
    info = client().deployments.deploy(
        target,
        inputs=inputs,
        tag=tag,
        exclusive=exclusive,
        image=image,
        untagged=untagged,
        retention=retention,
        force=force,
        max_concurrency=max_concurrency,
    )
    return Output(item=info.to_json(), text=_deployed_text(info))


# --- invoke ------------------------------------------------------------------------------


@main.command()
@click.argument("flow_name", metavar="FLOW")
@tag_option
@version_option
@input_option
@click.option(
    "--key",
    "routing_key",
    default=None,
    metavar="KEY",
    help="Routing key: on a split tag, the same key always runs the same version "
    "(e.g. a user or tenant id).",
)
@click.option("--wait", is_flag=True, help="Wait for the result; exit 1 if the run fails.")
@click.option("--timeout", type=float, default=None, help="Seconds to --wait (default: forever).")
@idempotency_key_option
@retention_options("this execution")
@kitaru_command
def invoke(
    flow_name: str,
    tag: str | None,
    version: int | None,
    input_: str | None,
    routing_key: str | None,
    wait: bool,
    timeout: float | None,
    idempotency_key: str | None,
    ttl_seconds_after_finished: int | None,
    history_limit: int | None,
) -> Output:
    """Start a new execution of a deployed flow (no --tag/--version: the default route)."""
    inputs = parse_inputs(input_)
    handle = client().deployments.invoke(
        flow_name,
        tag=tag,
        version=version,
        inputs=inputs,
        retention=Retention(ttl_seconds_after_finished, history_limit),
        routing_key=routing_key,
        idempotency_key=idempotency_key,
    )
    route = f"tag {tag}" if tag else (f"version {version}" if version else "tag default")
    verb = "Existing execution" if handle.existing else "Started execution"
    started = f"{verb} {handle.exec_id} ({flow_name} v{handle.version}, {route})\n"
    if handle.existing:
        started += f"(idempotency key {shown(idempotency_key)} already started it)\n"
    if not wait:
        return Output(item=handle.to_json(), text=started)
    return waited(handle.exec_id, timeout, started, extra={"version": handle.version})


def waited(
    exec_id: str, timeout: float | None, prefix: str = "", extra: dict | None = None
) -> Output:
    """Wait for an execution; the result on success, exit 1 with its message otherwise."""
    from kitaru.client.errors import ExecutionFailed
    from kitaru.client.handle import outcome

    executions_api = client().executions
    if prefix and not is_json():
        click.echo(prefix, nl=False)
    with spinner(f"waiting for {exec_id}", enabled=not is_json()):
        info = executions_api.wait(exec_id, timeout=timeout)
    item = {**info.to_json(), **(extra or {})}
    try:
        result = outcome(info)
    except ExecutionFailed as failure:
        if is_json():
            raise
        return Output(item=item, stderr=f"Error: {failure.message}\n", exit_code=1)
    return Output(item=item, text=result_text(result))


# --- connection --------------------------------------------------------------------------


@main.command()
@click.argument("url")
@click.option("--api-key", required=True, help="Bearer token for the API server.")
@click.option("--project", required=True, help="Project: the Kubernetes namespace to work in.")
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="CA certificate of the API server (PEM).",
)
@click.option(
    "--service-account", default=None, help="ServiceAccount `kitaru auth token` mints tokens for."
)
@kitaru_command
def login(
    url: str, api_key: str, project: str, ca_file: str | None, service_account: str | None
) -> Output:
    """Save the connection: server URL, token and project (~/.config/kitaru, mode 600)."""
    from kitaru.client.connection import SavedConnection, save_connection

    saved = SavedConnection(
        server=url.rstrip("/"),
        token=api_key,
        project=project,
        ca_file=str(Path(ca_file).resolve()) if ca_file else None,
        service_account=service_account,
    )
    path = save_connection(saved)
    return Output(
        item={"server": saved.server, "project": project, "path": str(path)},
        text=f"Saved the connection to {saved.server} (project {project}) in {path}\n"
        "Check it with: kitaru status",
    )


@main.command()
@kitaru_command
def info() -> Output:
    """Show each connection value and where it came from (tokens masked)."""
    from kitaru.client.connection import resolve_connection

    connection = resolve_connection()
    rows = connection.describe()
    missing = connection.missing()
    text = table(
        ["SETTING", "VALUE", "SOURCE"], [[r["name"], r["value"], r["source"]] for r in rows]
    )
    if missing:
        text += "".join(f"missing: {m}\n" for m in missing)
    return Output(item={"connection": rows, "missing": missing}, text=text)


@main.command()
@kitaru_command
def status() -> Output:
    """Check the active connection: reach the server and the project."""
    kitaru = client()
    version = kitaru.server_version()
    flows = kitaru.deployments.flows()
    rows = kitaru.connection.describe()
    item = {
        "connection": rows,
        "server_version": version,
        "project": kitaru.project,
        "flows": len(flows),
    }
    text = (
        f"Connected to {kitaru.connection.server.value} (Kubernetes {version}), "
        f"project {kitaru.project}: {len(flows)} flow(s)\n"
        + table(
            ["SETTING", "VALUE", "SOURCE"], [[r["name"], r["value"], r["source"]] for r in rows]
        )
    )
    return Output(item=item, text=text)


@main.group()
def auth() -> None:
    """Short-lived credentials for scripts (used by the generated curl)."""


@auth.command()
@click.option(
    "--duration",
    type=click.IntRange(CLIENT_TOKEN_MIN_SECONDS, CLIENT_TOKEN_MAX_SECONDS),
    default=3600,
    show_default=True,
    help="Lifetime in seconds (at most a day).",
)
@click.option(
    "--server",
    default=None,
    metavar="URL",
    help="Refuse unless the connection's API server is URL (the printed curl passes the "
    "server it calls, so its token is never minted for another one).",
)
@kitaru_command
def token(duration: int, server: str | None) -> Output:
    """Print a short-lived token for the configured ServiceAccount (TokenRequest).

    The ServiceAccount is KITARU_SERVICE_ACCOUNT, `kitaru login --service-account`,
    or `kitaru-client`; a `kitaru-client` token that may do more than invoke and read
    is refused. RBAC needed: `create` on `serviceaccounts/token` in the project.
    A stored token is never printed.
    """
    kitaru = client()
    minted = kitaru.auth_token(duration, server=server)
    return Output(
        item={"token": minted, "service_account": kitaru.service_account(), "expires_in": duration},
        text=minted,
    )


allowed_host_option = click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="Another host name the server answers to (repeatable), e.g. the name of a proxy "
    "in front. Loopback names and the --host address are always allowed; requests for any "
    "other name are refused (DNS rebinding).",
)


@main.command()
@click.option(
    "--transport",
    type=click.Choice(["stdio", "streamable-http"]),
    default="stdio",
    show_default=True,
    help="stdio: the assistant spawns the server. streamable-http: serve HTTP at "
    "http://HOST:PORT/mcp.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (streamable-http only). Every caller acts with the active "
    "Kitaru connection: on any address but loopback, callers need the bearer token.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8000,
    show_default=True,
    help="Port to listen on (streamable-http only).",
)
@allowed_host_option
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help=f"File holding the bearer token callers must send (or set {MCP_TOKEN_ENV}). "
    "Without one, a server on a non-loopback address makes a token and prints it once.",
)
def mcp(
    transport: str,
    host: str,
    port: int,
    allowed_hosts: tuple[str, ...],
    token_file: Path | None,
) -> None:
    """Serve the Kitaru tools to an MCP client (an assistant) over stdio or HTTP.

    Tools use the active connection (KITARU_SERVER_URL / KITARU_AUTH_TOKEN /
    KITARU_PROJECT, the saved login, or the kubeconfig). Over streamable-http the server
    answers only to its own host names, refuses browser requests from other origins,
    and on any address but loopback only to callers with its bearer token
    (`Authorization: Bearer TOKEN`).
    """
    from kitaru.mcp_server import build_server, serve_http
    from kitaru.web_security import is_loopback, new_token

    server = build_server()
    if transport != "streamable-http":
        server.run("stdio")
        return
    token = _mcp_token(token_file)
    if token is None and not is_loopback(host):
        token = new_token()
        click.echo(
            f"kitaru mcp listens on {host}:{port}: callers must send "
            f"'Authorization: Bearer {token}' (this token is shown once; set "
            f"{MCP_TOKEN_ENV} or --token-file to choose one)",
            err=True,
        )
    serve_http(server, host=host, port=port, extra_hosts=allowed_hosts, token=token)


def _mcp_token(token_file: Path | None) -> str | None:
    """The configured bearer token: --token-file, else KITARU_MCP_TOKEN, else None."""
    import os

    if token_file is not None:
        token, source = token_file.read_text().strip(), str(token_file)
    elif os.environ.get(MCP_TOKEN_ENV) is not None:
        token, source = os.environ[MCP_TOKEN_ENV].strip(), MCP_TOKEN_ENV
    else:
        return None
    if len(token) < MIN_TOKEN_LENGTH:
        raise click.BadParameter(
            f"the bearer token from {source} has {len(token)} characters: use at least "
            f"{MIN_TOKEN_LENGTH} random ones (e.g. `openssl rand -hex 32`)",
            param_hint="--token-file",
        )
    return token


@main.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Every visitor acts with the dashboard's connection, so any "
    "address but loopback needs --auth-proxy with --proxy-secret-file.",
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="Port."
)
@click.option(
    "--in-cluster",
    is_flag=True,
    help="Connect as the pod's ServiceAccount (the chart's dashboard), not the active connection.",
)
@allowed_host_option
@click.option(
    "--auth-proxy",
    is_flag=True,
    help="Serve only people an authenticating proxy in front has signed in (it names them "
    "in --user-header and --groups-header) and act as each of them with Kubernetes "
    "impersonation: the connection needs `impersonate` on those users and groups. The "
    "proxy is trusted on loopback (a sidecar) or with --proxy-secret-file.",
)
@click.option(
    "--proxy-secret-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="With --auth-proxy: trust the user headers only on requests whose "
    "X-Kitaru-Proxy-Secret header holds this file's secret (a proxy outside the pod).",
)
@click.option(
    "--user-header", default="X-Forwarded-User", show_default=True, help="With --auth-proxy."
)
@click.option(
    "--groups-header",
    default="X-Forwarded-Groups",
    show_default=True,
    help="With --auth-proxy: comma-separated groups (repeated headers too).",
)
@click.option(
    "--allow-group",
    "allowed_groups",
    multiple=True,
    metavar="NAME",
    help="With --auth-proxy: a group passed on to the API server (repeatable); other groups "
    "the proxy names are dropped. Groups starting with 'system:' never are.",
)
@kitaru_command
def ui(
    host: str,
    port: int,
    in_cluster: bool,
    allowed_hosts: tuple[str, ...],
    auth_proxy: bool,
    proxy_secret_file: Path | None,
    user_header: str,
    groups_header: str,
    allowed_groups: tuple[str, ...],
) -> Output:
    """Serve the dashboard: flows, routes, runs, logs and an invoke form.

    It uses the active connection like every other command, so the API server decides
    what it shows and allows; buttons the connection may not use are not shown. It
    answers only to its own host names, and forms work only from its own pages.
    """
    import uvicorn

    from kitaru.client.connection import in_cluster_connection, resolve_connection
    from kitaru.ui.app import RECONNECT_SECONDS, Connector, create_app
    from kitaru.ui.security import exposure_problem
    from kitaru.web_security import allowed_hosts as host_names

    proxy = _proxy_auth(auth_proxy, proxy_secret_file, user_header, groups_header, allowed_groups)
    problem = exposure_problem(host, proxy)
    if problem:
        raise InvalidArguments(problem, kind="UnsafeAddress")
    if in_cluster:
        connect = Connector(in_cluster_connection, RECONNECT_SECONDS)
    else:
        connect = Connector(resolve_connection)
    project = connect().project  # an incomplete connection fails here, before serving
    hosts = host_names(host, allowed_hosts)
    app = create_app(connect, hosts, proxy)
    click.echo(f"Kitaru dashboard for project {project}: http://{host}:{port}/", err=True)
    # proxy_headers=False: the peer address is the TCP peer's, never X-Forwarded-For
    # (the sidecar proxy is trusted because it is on loopback).
    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=False)
    return Output(item={"host": host, "port": port, "project": project}, text="")


def _proxy_auth(
    enabled: bool,
    secret_file: Path | None,
    user_header: str,
    groups_header: str,
    allowed_groups: tuple[str, ...],
) -> ProxyAuth | None:
    from kitaru.ui.security import RESERVED_PREFIX, ProxyAuth

    if not enabled:
        if secret_file is not None or allowed_groups:
            raise InvalidArguments(
                "--proxy-secret-file and --allow-group apply to --auth-proxy: add it"
            )
        return None
    secret = None
    if secret_file is not None:
        secret = secret_file.read_bytes().strip()
        if len(secret) < MIN_TOKEN_LENGTH:
            raise InvalidArguments(
                f"the proxy secret in {secret_file} has {len(secret)} bytes: use at least "
                f"{MIN_TOKEN_LENGTH} random characters (e.g. `openssl rand -hex 32`)"
            )
    reserved = [g for g in allowed_groups if g.lower().startswith(RESERVED_PREFIX)]
    if reserved:
        raise InvalidArguments(
            f"--allow-group {reserved[0]!r}: the dashboard never acts as a Kubernetes system group"
        )
    return ProxyAuth(
        user_header=user_header,
        groups_header=groups_header,
        secret=secret,
        allowed_groups=frozenset(allowed_groups),
    )


__all__ = ["KitaruError", "main"]

if __name__ == "__main__":
    main()
