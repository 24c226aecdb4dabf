"""`kitaru mcp`: the MCP server that lets an assistant deploy, route, invoke and inspect flows.

Every tool is a thin call into `KitaruClient`, made with the active connection
(`KITARU_SERVER_URL` / `KITARU_AUTH_TOKEN` / `KITARU_PROJECT`, the saved login,
or the kubeconfig), so a tool call carries no token. Results are the JSON items
of the CLI's `-o json`; a list comes back as `{"items": [...], "count": N}`
because MCP structured content is an object. Failures are tool errors
(`isError`) whose text is the CLI's error message, with `{"error": {"message",
"type"}}` as structured content.

`kitaru mcp` (in `kitaru.cli.main`) runs `build_server().run("stdio")`, or
`serve_http(...)` with `--transport streamable-http`: the SDK's transport answers only
to the server's own host names and to no browser origin but theirs (DNS rebinding), and
`BearerToken` asks every caller for the token when one is set. The MCP SDK and the
client layer (hence the Kubernetes client) are imported only when the server is built
or first called, so the server starts fast and lists its tools without touching the
cluster.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from kitaru.core.idempotency import IDEMPOTENCY_KEY_MAX_LENGTH, IDEMPOTENCY_KEY_PATTERN
from kitaru.core.names import (
    FLOW_MAX_LENGTH,
    FLOW_PATTERN,
    PROMOTION_DEFAULT_MIN_RUNS,
    PROMOTION_DEFAULT_MIN_SUCCESS,
    TAG_MAX_LENGTH,
    TAG_PATTERN,
)
from kitaru.core.queueing import MAX_LIMIT
from kitaru.core.retention import Retention

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from kitaru.client import KitaruClient

# Name formats are advertised in the schemas but checked by the client layer, so
# a bad name gets the same message as on the CLI.
Flow = Annotated[
    str,
    Field(
        description="Public flow name, e.g. research_agent.",
        json_schema_extra={"pattern": FLOW_PATTERN, "maxLength": FLOW_MAX_LENGTH},
    ),
]
Tag = Annotated[
    str,
    Field(
        description="Routing tag, e.g. stable, canary or default.",
        json_schema_extra={"pattern": TAG_PATTERN, "maxLength": TAG_MAX_LENGTH},
    ),
]
Selector = Annotated[
    str | None,
    Field(
        description="Tag to resolve (give tag or version, not both; neither means 'default').",
        json_schema_extra={"pattern": TAG_PATTERN, "maxLength": TAG_MAX_LENGTH},
    ),
]
Version = Annotated[int, Field(ge=1, description="Deployment version number.")]
OptionalVersion = Annotated[
    int | None,
    Field(ge=1, description="Exact deployment version (give tag or version, not both)."),
]
Inputs = Annotated[
    dict[str, Any] | None,
    Field(description="Flow inputs as a JSON object; they override the deploy-time inputs by key."),
]
IdempotencyKey = Annotated[
    str | None,
    Field(
        description="Start at most one execution for this key (per flow, 24 h): a repeat "
        "with the same request returns it (existing: true); another request is an error.",
        json_schema_extra={
            "pattern": IDEMPOTENCY_KEY_PATTERN,
            "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH,
        },
    ),
]
ExecId = Annotated[
    str, Field(description="Execution id, as returned by kitaru_deployments_invoke.")
]
TtlSeconds = Annotated[
    int | None,
    Field(
        ge=0,
        description="Delete finished runs this many seconds after they finish "
        "(default: the operator's, a week).",
    ),
]
HistoryLimit = Annotated[
    int | None,
    Field(
        ge=0,
        description="Delete a finished run once this many newer runs of the flow exist "
        "(default: the operator's, 1000).",
    ),
]
Force = Annotated[
    bool,
    Field(
        description="Move the tag even if the version would reject inputs that the tag's "
        "current version accepts (a removed or retyped input, a new required one)."
    ),
]


_client: KitaruClient | None = None

Reason = Annotated[
    str | None, Field(description="Why: recorded in the route history (kitaru flow history).")
]


def _kitaru() -> KitaruClient:
    """The client on the active connection, created on first use (not at startup)."""
    global _client
    if _client is None:
        from kitaru.client import KitaruClient

        _client = KitaruClient()
    return _client


def kitaru_deployments_deploy(
    target: Annotated[
        str,
        Field(
            description="Flow source as path/to/file.py:flow_name, relative to the directory "
            "the server runs in (a `kitaru init` project)."
        ),
    ],
    inputs: Annotated[
        dict[str, Any] | None,
        Field(description="Representative deploy-time inputs as a JSON object."),
    ] = None,
    tag: Annotated[
        str | None,
        Field(
            description="The one routing tag this version gets; omitted means 'default'.",
            json_schema_extra={"pattern": TAG_PATTERN, "maxLength": TAG_MAX_LENGTH},
        ),
    ] = None,
    exclusive: Annotated[
        bool, Field(description="Move the tag here from other versions ('default' always is).")
    ] = False,
    image: Annotated[
        str | None,
        Field(description="Prebuilt container image to run instead of the stack's runner image."),
    ] = None,
    ttl_seconds_after_finished: TtlSeconds = None,
    history_limit: HistoryLimit = None,
    force: Force = False,
    max_concurrency: Annotated[
        int | None,
        Field(
            description="At most this many runs through the tag active at once; more wait, "
            "Queued, first-in first-out.",
            json_schema_extra={"minimum": 1, "maximum": MAX_LIMIT},
        ),
    ] = None,
) -> dict[str, Any]:
    """Deploy a flow from source as the next immutable version, with one routing tag.

    Refused (IncompatibleSchema) when its inputs would break the tag's callers, unless
    force is true."""
    from kitaru.client.source import confine_target

    target = confine_target(target, Path.cwd())  # before anything is imported or sent
    deployments = _kitaru().deployments
    return deployments.deploy(
        target,
        inputs=inputs,
        tag=tag,
        exclusive=exclusive,
        image=image,
        retention=Retention(ttl_seconds_after_finished, history_limit),
        force=force,
        max_concurrency=max_concurrency,
    ).to_json()


def kitaru_deployments_invoke(
    flow: Flow,
    tag: Selector = None,
    version: OptionalVersion = None,
    inputs: Inputs = None,
    ttl_seconds_after_finished: TtlSeconds = None,
    history_limit: HistoryLimit = None,
    key: Annotated[
        str | None,
        Field(
            description="Routing key: on a split tag, the same key always runs the same "
            "version (e.g. a user or tenant id)."
        ),
    ] = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Start a new execution of a deployed flow, resolved by tag or version ('default' if neither).

    Returns at once with the execution id and the resolved version; follow it
    with kitaru_executions_wait or kitaru_executions_get.
    """
    return (
        _kitaru()
        .deployments.invoke(
            flow,
            tag=tag,
            version=version,
            inputs=inputs,
            retention=Retention(ttl_seconds_after_finished, history_limit),
            routing_key=key,
            idempotency_key=idempotency_key,
        )
        .to_json()
    )


def kitaru_deployments_list(flow: Flow) -> dict[str, Any]:
    """List the deployment versions of a flow with the tags routed to each."""
    return _items(_kitaru().deployments.list(flow))


def kitaru_deployments_get(
    flow: Flow, tag: Selector = None, version: OptionalVersion = None
) -> dict[str, Any]:
    """Show the deployment version a tag or version resolves to ('default' if neither)."""
    return _kitaru().deployments.get(flow, tag=tag, version=version).to_json()


def kitaru_deployments_tag(
    flow: Flow,
    tag: Tag,
    version: Annotated[
        int | None,
        Field(ge=1, description="The version the tag routes to (give version or split)."),
    ] = None,
    split: Annotated[
        dict[str, int] | None,
        Field(
            description="Split the tag between versions by weight: version -> percent, adding "
            'up to 100, e.g. {"2": 90, "3": 10} (give version or split). Each invocation runs '
            "one of them; a routing key makes the choice sticky."
        ),
    ] = None,
    exclusive: Annotated[
        bool,
        Field(description="Exclusive: move the tag to this version. Shared: add this version."),
    ] = False,
    force: Force = False,
    reason: Reason = None,
    expires: Annotated[
        str | None,
        Field(
            description="Remove the tag after this long (30m, 12h, 7d); never on 'default'. "
            "Omitted: the tag does not expire."
        ),
    ] = None,
) -> dict[str, Any]:
    """Route a tag to a deployment version (promote, e.g. stable to version 2), or split
    it between versions by weight (a canary: {"2": 90, "3": 10}).

    Refused (IncompatibleSchema, naming each input) when a version new to the tag would
    reject inputs the tag's current version accepts, unless force is true. With expires
    the operator removes the tag then (InvalidExpiry for a bad duration or on 'default')."""
    return (
        _kitaru()
        .deployments.tag(
            flow,
            tag,
            version=version,
            exclusive=exclusive,
            force=force,
            reason=reason,
            expires=expires,
            split=split,
        )
        .to_json()
    )


def kitaru_deployments_untag(
    flow: Flow,
    tag: Tag,
    version: Annotated[
        int | None,
        Field(ge=1, description="Version to take the tag off; omitted: the tag's only version."),
    ] = None,
    reason: Reason = None,
) -> dict[str, Any]:
    """Take a tag off a version. 'default' cannot be removed, only moved with a tag call."""
    return _kitaru().deployments.untag(flow, tag, version=version, reason=reason).to_json()


def kitaru_deployments_limit(
    flow: Flow,
    max_concurrency: Annotated[
        int | None,
        Field(
            description="Most runs active at once; more wait in phase Queued and start "
            "first-in first-out. null clears the limit.",
            json_schema_extra={"minimum": 1, "maximum": MAX_LIMIT},
        ),
    ],
    tag: Annotated[
        str | None,
        Field(
            description="Limit only the runs invoked through this tag; omitted: the whole flow.",
            json_schema_extra={"pattern": TAG_PATTERN, "maxLength": TAG_MAX_LENGTH},
        ),
    ] = None,
) -> dict[str, Any]:
    """Set or clear a concurrency limit of a flow (or of one of its tags). Returns the
    route holding it: max_concurrency (the tag's) or flow_max_concurrency (the flow's)."""
    return _kitaru().deployments.limit(flow, max_concurrency, tag=tag).to_json()


def kitaru_deployments_history(
    flow: Flow,
    tag: Annotated[
        str | None, Field(description="Only this tag's changes (and route, with `at`).")
    ] = None,
    at: Annotated[
        str | None,
        Field(description="ISO 8601 time: return what each tag routed to then, not changes."),
    ] = None,
) -> dict[str, Any]:
    """Recorded route changes of a flow (who, when, why, from -> to), oldest first; with
    `at`, what its tags routed to at that time. `byVerified` says whether `by` was checked
    by the API server (true) or only inferred from a field manager the writer named."""
    return _kitaru().deployments.history(flow, tag, at=at)


def kitaru_deployments_rollback(flow: Flow, tag: Tag, reason: Reason = None) -> dict[str, Any]:
    """Move a tag back to what it routed to before its last recorded change (atomic)."""
    return _kitaru().deployments.rollback(flow, tag, reason=reason).to_json()


def kitaru_deployments_delete(flow: Flow, version: Version) -> dict[str, Any]:
    """Delete a deployment version. A version that holds an exclusive tag cannot be deleted."""
    return _kitaru().deployments.delete(flow, version=version).to_json()


def kitaru_deployments_prune(
    flow: Flow,
    keep: Annotated[
        int, Field(ge=0, description="How many of the newest versions to keep, tagged or not.")
    ],
) -> dict[str, Any]:
    """Delete a flow's old versions that hold no tag; tagged versions are never deleted."""
    return _kitaru().deployments.prune(flow, keep).to_json()


def kitaru_deployments_promote(
    flow: Flow,
    from_tag: Annotated[str, Field(description="The tag whose version is the candidate.")],
    to_tag: Annotated[str, Field(description="The tag moved once the gate is met.")],
    after: Annotated[
        str | None,
        Field(description="No move before this long from now (30m, 1h, 7d); omitted: none."),
    ] = None,
    min_runs: Annotated[
        int, Field(description="Finished runs of the candidate needed before deciding.")
    ] = PROMOTION_DEFAULT_MIN_RUNS,
    min_success: Annotated[
        float, Field(description="Fraction of those runs that must have completed (0..1).")
    ] = PROMOTION_DEFAULT_MIN_SUCCESS,
    force: Force = False,
    reason: Reason = None,
) -> dict[str, Any]:
    """Create a gated promotion: the operator moves to_tag to the version from_tag routes
    to once the window has passed and min_runs of its runs finished with a success rate
    >= min_success, or ends it NotPromoted saying why (follow it with
    kitaru_deployments_promotions). The move is recorded in the route history."""
    return (
        _kitaru()
        .deployments.promote(
            flow,
            from_tag,
            to_tag,
            after=after,
            min_runs=min_runs,
            min_success=min_success,
            force=force,
            reason=reason,
        )
        .to_json()
    )


def kitaru_deployments_promotions(
    flow: Flow,
    to_tag: Annotated[str | None, Field(description="Only promotions of this tag.")] = None,
) -> dict[str, Any]:
    """A flow's promotions, oldest first: gate, phase, candidate and measured runs."""
    return _items(_kitaru().deployments.promotions(flow, to_tag))


def kitaru_deployments_cancel_promotion(
    flow: Flow, to_tag: Annotated[str, Field(description="The tag of the waiting promotion.")]
) -> dict[str, Any]:
    """Cancel the waiting promotion of a flow's tag: nothing moves."""
    return _items(_kitaru().deployments.cancel_promotion(flow, to_tag))


def kitaru_executions_list(
    flow: Annotated[str | None, Field(description="Only executions of this flow.")] = None,
    status: Annotated[
        Literal["pending", "running", "completed", "failed", "cancelled"] | None,
        Field(description="Only executions in this status."),
    ] = None,
    limit: Annotated[int, Field(ge=1, description="At most this many, newest first.")] = 50,
) -> dict[str, Any]:
    """List executions, newest first (selected by the API server, read page by page)."""
    return _items(_kitaru().executions.list(flow, status=status, limit=limit))


def kitaru_executions_get(exec_id: ExecId) -> dict[str, Any]:
    """Show an execution: status, resolved version, result or failure message."""
    return _kitaru().executions.get(exec_id).to_json()


def kitaru_executions_wait(
    exec_id: ExecId,
    timeout: Annotated[
        float, Field(gt=0, description="Seconds to wait before giving up (the run goes on).")
    ] = 300,
) -> dict[str, Any]:
    """Wait for an execution to finish and return it with its result.

    A failed or cancelled execution is a tool error carrying its failure message.
    """
    from kitaru.client.handle import outcome

    info = _kitaru().executions.wait(exec_id, timeout=timeout)
    outcome(info)
    return info.to_json()


def kitaru_executions_cancel(exec_id: ExecId) -> dict[str, Any]:
    """Cancel a running execution (its Job is deleted)."""
    return _kitaru().executions.cancel(exec_id).to_json()


def kitaru_executions_logs(exec_id: ExecId) -> dict[str, Any]:
    """Return the log output of an execution."""
    return {"exec_id": exec_id, "logs": _kitaru().executions.logs(exec_id)}


def kitaru_deployments_shadow(
    flow: Flow,
    tag: Tag,
    version: Annotated[
        int | None, Field(ge=1, description="The candidate version the shadow runs use.")
    ] = None,
    fraction: Annotated[
        float | None,
        Field(description="The share of the tag's invocations to mirror: above 0, at most 1."),
    ] = None,
    off: Annotated[bool, Field(description="Stop mirroring (no version or fraction).")] = False,
) -> dict[str, Any]:
    """Mirror a fraction of a tag's invocations to a candidate version (shadow runs: the
    same inputs, results kept beside the primary's and never returned to the caller), or
    stop with off. The route's shadow_summary says how often the two agree."""
    return (
        _kitaru()
        .deployments.shadow(flow, tag, version=version, fraction=fraction, off=off)
        .to_json()
    )


def kitaru_executions_diff(exec_id: ExecId) -> dict[str, Any]:
    """Compare an execution with its shadow run: status, duration, result and a diff."""
    return _kitaru().executions.diff(exec_id)


ScheduleName = Annotated[
    str,
    Field(description="Schedule name: lowercase letters, digits and '-', at most 52 characters."),
]


def kitaru_schedules_create(
    name: ScheduleName,
    flow: Flow,
    cron: Annotated[
        str,
        Field(
            description="Five cron fields (minute hour day-of-month month day-of-week), e.g. "
            "'0 3 * * *', or @hourly, @daily, @weekly, @monthly, @yearly."
        ),
    ],
    time_zone: Annotated[
        str | None, Field(description="IANA time zone, e.g. Europe/Berlin (default UTC).")
    ] = None,
    tag: Selector = None,
    version: OptionalVersion = None,
    inputs: Inputs = None,
    concurrency_policy: Annotated[
        str,
        Field(
            description="A tick while a run is unfinished: Allow (start another), Forbid "
            "(skip the tick) or Replace (cancel the run first)."
        ),
    ] = "Allow",
    starting_deadline_seconds: Annotated[
        int | None,
        Field(
            description="Skip a tick not started within this many seconds (>= 1; default: "
            "always run the latest missed tick)."
        ),
    ] = None,
    successful_runs_history_limit: Annotated[
        int, Field(description="Completed runs kept (0-1000).")
    ] = 3,
    failed_runs_history_limit: Annotated[
        int, Field(description="Failed or cancelled runs kept (0-1000).")
    ] = 1,
    suspend: Annotated[bool, Field(description="Create it paused.")] = False,
) -> dict[str, Any]:
    """Invoke a flow's route (tag, version, or 'default' if neither) on a cron schedule.

    Each tick's run resolves the route as it stands then; CronJob semantics for missed
    ticks, concurrency and history limits.
    """
    return (
        _kitaru()
        .schedules.create(
            name,
            flow,
            cron,
            time_zone=time_zone,
            tag=tag,
            version=version,
            inputs=inputs,
            concurrency_policy=concurrency_policy,
            starting_deadline_seconds=starting_deadline_seconds,
            successful_runs_history_limit=successful_runs_history_limit,
            failed_runs_history_limit=failed_runs_history_limit,
            suspend=suspend,
        )
        .to_json()
    )


def kitaru_schedules_list(
    flow: Annotated[str | None, Field(description="Only schedules of this flow.")] = None,
) -> dict[str, Any]:
    """List schedules: flow, target, cron, time zone, last and next tick."""
    return _items(_kitaru().schedules.list(flow))


def kitaru_schedules_get(name: ScheduleName) -> dict[str, Any]:
    """Show a schedule: what it runs, when, its last and next tick, unfinished runs."""
    return _kitaru().schedules.get(name).to_json()


def kitaru_schedules_pause(name: ScheduleName) -> dict[str, Any]:
    """Pause a schedule: no new runs until resumed (unfinished runs go on)."""
    return _kitaru().schedules.pause(name).to_json()


def kitaru_schedules_resume(name: ScheduleName) -> dict[str, Any]:
    """Resume a schedule (the latest tick missed meanwhile runs now, within its deadline)."""
    return _kitaru().schedules.resume(name).to_json()


def kitaru_schedules_delete(name: ScheduleName) -> dict[str, Any]:
    """Delete a schedule and its runs."""
    return _kitaru().schedules.delete(name).to_json()


def _items(items: list[Any]) -> dict[str, Any]:
    return {"items": [item.to_json() for item in items], "count": len(items)}


TOOLS: tuple[tuple[Callable[..., dict[str, Any]], bool], ...] = (
    # (tool, read-only)
    (kitaru_deployments_deploy, False),
    (kitaru_deployments_invoke, False),
    (kitaru_deployments_list, True),
    (kitaru_deployments_get, True),
    (kitaru_deployments_tag, False),
    (kitaru_deployments_untag, False),
    (kitaru_deployments_limit, False),
    (kitaru_deployments_history, True),
    (kitaru_deployments_rollback, False),
    (kitaru_deployments_shadow, False),
    (kitaru_deployments_delete, False),
    (kitaru_deployments_prune, False),
    (kitaru_deployments_promote, False),
    (kitaru_deployments_promotions, True),
    (kitaru_deployments_cancel_promotion, False),
    (kitaru_executions_list, True),
    (kitaru_executions_get, True),
    (kitaru_executions_wait, True),
    (kitaru_executions_cancel, False),
    (kitaru_executions_logs, True),
    (kitaru_executions_diff, True),
    (kitaru_schedules_create, False),
    (kitaru_schedules_list, True),
    (kitaru_schedules_get, True),
    (kitaru_schedules_pause, False),
    (kitaru_schedules_resume, False),
    (kitaru_schedules_delete, False),
)


def build_server() -> MCPServer:
    """The MCP server with every Kitaru tool registered."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.tools import Tool
    from mcp.types import CallToolResult, TextContent, ToolAnnotations

    from kitaru.client.errors import KitaruError

    def as_tool(fn: Callable[..., dict[str, Any]]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def tool(**arguments: Any) -> dict[str, Any] | CallToolResult:
            try:
                return fn(**arguments)
            except KitaruError as error:
                return CallToolResult(
                    content=[TextContent(type="text", text=error.message)],
                    structured_content={"error": {"message": error.message, "type": error.kind}},
                    is_error=True,
                )

        return tool

    def strict(tool: Tool) -> Tool:
        """Unknown arguments are a tool error rather than ignored: a misspelt `input`
        must not start a run with the deploy-time inputs instead."""
        loose = tool.fn_metadata.arg_model
        config = {**loose.model_config, "extra": "forbid"}
        tool.fn_metadata.arg_model = type(loose.__name__, (loose,), {"model_config": config})
        tool.parameters["additionalProperties"] = False
        return tool

    tools = [
        strict(
            Tool.from_function(
                as_tool(fn),
                name=fn.__name__,
                description=inspect.getdoc(fn),
                annotations=ToolAnnotations(read_only_hint=read_only),
            )
        )
        for fn, read_only in TOOLS
    ]
    server: MCPServer = MCPServer(
        "kitaru",
        instructions=(
            "Kitaru deployments: immutable, numbered versions of Python flows; tags "
            "(default, stable, ...) route to versions; invoking a flow by tag or version "
            "starts an execution. Use kitaru_deployments_list/get to inspect routes "
            "before invoking, and kitaru_executions_wait to get a result."
        ),
        log_level="WARNING",
        tools=tools,
    )
    return server


def _netloc(name: str) -> str:
    return f"[{name}]" if ":" in name else name


def http_app(server: MCPServer, host: str, extra_hosts: Iterable[str], token: str | None) -> Any:
    """The streamable-HTTP app of `server` bound to `host`: the SDK's Host and Origin
    checks with the names `allowed_hosts` gives, behind `BearerToken` when `token` is set."""
    from mcp.server.transport_security import TransportSecuritySettings

    from kitaru.web_security import BearerToken, allowed_hosts

    names = sorted(_netloc(name) for name in allowed_hosts(host, extra_hosts))
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[*names, *(f"{name}:*" for name in names)],
        allowed_origins=[
            f"{scheme}://{name}{port}"
            for scheme in ("http", "https")
            for name in names
            for port in ("", ":*")
        ],
    )
    app = server.streamable_http_app(transport_security=security, host=host)
    return BearerToken(app, token) if token else app


def serve_http(
    server: MCPServer, host: str, port: int, extra_hosts: Iterable[str], token: str | None
) -> None:
    """Serve `server` over streamable HTTP at http://HOST:PORT/mcp until interrupted."""
    import uvicorn

    app = http_app(server, host, extra_hosts, token)
    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=False)
