"""`kitaru executions …`: follow, wait for, cancel and read the logs of executions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from kitaru.cli.base import client, kitaru_command
from kitaru.cli.output import Output, fields, result_text, table
from kitaru.client.records import STATUSES

if TYPE_CHECKING:
    from kitaru.client import ExecutionInfo

exec_id_argument = click.argument("exec_id", metavar="EXECUTION_ID")
DEFAULT_LIMIT = 50


def execution_fields(info: ExecutionInfo) -> str:
    selector = (
        f"tag {info.tag}"
        if info.tag
        else (f"version {info.version}" if info.version else "default")
    )
    pairs = {
        "execution": info.exec_id,
        "flow": info.flow,
        "requested": selector,
        "version": info.resolved_version,
        "routing": info.routing,
        "status": info.status,
        "inputs": dict(info.inputs),
        "created": info.created,
        "finished": info.finished_at,
    }
    if info.queue_position is not None:
        pairs["queue position"] = info.queue_position
    if info.idempotency_key is not None:
        pairs["idempotency key"] = info.idempotency_key
    if info.status == "completed":
        pairs["result"] = result_text(info.result)
    elif info.message or info.reason:
        pairs["message"] = f"{info.reason or ''}: {info.message or ''}".strip(": ")
    return fields(pairs)


@click.group()
def executions() -> None:
    """Executions of deployed flows."""


@executions.command("list")
@click.option("--flow", "flow_name", default=None, help="Only executions of this flow.")
@click.option(
    "--status",
    type=click.Choice(STATUSES),
    default=None,
    help="Only executions in this status.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=DEFAULT_LIMIT,
    show_default=True,
    help="Show at most this many, newest first.",
)
@kitaru_command
def list_command(flow_name: str | None, status: str | None, limit: int) -> Output:
    """List executions, newest first."""
    infos = client().executions.list(flow_name, status=status, limit=limit)
    return Output(
        items=[i.to_json() for i in infos],
        text=table(
            ["EXECUTION", "FLOW", "VERSION", "STATUS", "CREATED"],
            [[i.exec_id, i.flow, i.resolved_version, i.status, i.created] for i in infos],
            empty="No executions.",
        ),
    )


@executions.command("get")
@exec_id_argument
@kitaru_command
def get_command(exec_id: str) -> Output:
    """Show an execution: status, resolved version, result or failure message."""
    info = client().executions.get(exec_id)
    return Output(item=info.to_json(), text=execution_fields(info))


@executions.command("logs")
@exec_id_argument
@kitaru_command
def logs_command(exec_id: str) -> Output:
    """Print the log output of an execution."""
    logs = client().executions.logs(exec_id)
    return Output(item={"exec_id": exec_id, "logs": logs}, text=logs)


@executions.command("wait")
@exec_id_argument
@click.option("--timeout", type=float, default=None, help="Seconds to wait (default: forever).")
@kitaru_command
def wait_command(exec_id: str, timeout: float | None) -> Output:
    """Wait for an execution and print its result (exit 1 if it failed)."""
    from kitaru.cli.main import waited

    return waited(exec_id, timeout)


@executions.command("diff")
@exec_id_argument
@kitaru_command
def diff_command(exec_id: str) -> Output:
    """Compare an execution with its shadow run: status, duration, result diff."""
    diff = client().executions.diff(exec_id)
    rows = [
        [side, run["exec_id"], run["version"], run["status"], run["duration_seconds"]]
        for side, run in (("primary", diff["primary"]), ("shadow", diff["shadow"]))
    ]
    text = table(["RUN", "EXECUTION", "VERSION", "STATUS", "SECONDS"], rows)
    if not diff["finished"]:
        text += "\nnot finished yet: compare again when both have"
    elif diff["agree"]:
        text += "\nthey agree: the same outcome and the same result"
    else:
        text += "\nthey differ:\n" + (
            "\n".join(diff["result_diff"]) or "the outcomes differ (see STATUS)"
        )
    return Output(item=diff, text=text)


@executions.command("cancel")
@exec_id_argument
@kitaru_command
def cancel_command(exec_id: str) -> Output:
    """Cancel an execution: its Job is deleted and it ends as cancelled."""
    info = client().executions.cancel(exec_id)
    return Output(item=info.to_json(), text=f"Cancellation requested for {exec_id}")
