"""`kitaru mcp`: the MCP server that lets an assistant deploy, route, invoke and inspect flows.

Every tool is a thin call into `KitaruClient`, made with the active connection
(`KITARU_SERVER_URL` / `KITARU_AUTH_TOKEN` / `KITARU_PROJECT`, the saved login,
or the kubeconfig), so a tool call carries no token. Results are the JSON items
of the CLI's `-o json`; a list comes back as `{"items": [...], "count": N}`
because MCP structured content is an object. Failures are tool errors
(`isError`) whose text is the CLI's error message, with `{"error": {"message",
"type"}}` as structured content.

`kitaru mcp` (in `kitaru.cli.main`) runs `build_server().run("stdio")`, or
`run("streamable-http", host=..., port=...)` with `--transport streamable-http`. The MCP SDK
and the client layer (hence the Kubernetes client) are imported only when the
server is built or first called, so the server starts fast and lists its tools
without touching the cluster.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from kitaru.core.names import (
    FLOW_MAX_LENGTH,
    FLOW_PATTERN,
    PROMOTION_DEFAULT_MIN_RUNS,
    PROMOTION_DEFAULT_MIN_SUCCESS,
    TAG_MAX_LENGTH,
    TAG_PATTERN,
)
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
) -> dict[str, Any]:
    """Deploy a flow from source as the next immutable version, with one routing tag.

    Refused (IncompatibleSchema) when its inputs would break the tag's callers, unless
    force is true."""
    deployments = _kitaru().deployments
    return deployments.deploy(
        target,
        inputs=inputs,
        tag=tag,
        exclusive=exclusive,
        image=image,
        retention=Retention(ttl_seconds_after_finished, history_limit),
        force=force,
    ).to_json()


def kitaru_deployments_invoke(
    flow: Flow,
    tag: Selector = None,
    version: OptionalVersion = None,
    inputs: Inputs = None,
    ttl_seconds_after_finished: TtlSeconds = None,
    history_limit: HistoryLimit = None,
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
    version: Version,
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
    """Route a tag to a deployment version (promote, e.g. stable to version 2).

    Refused (IncompatibleSchema, naming each input) when the version would reject inputs
    the tag's current version accepts, unless force is true. With expires the operator
    removes the tag then (InvalidExpiry for a bad duration or on 'default')."""
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
    `at`, what its tags routed to at that time."""
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
    (kitaru_deployments_history, True),
    (kitaru_deployments_rollback, False),
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
