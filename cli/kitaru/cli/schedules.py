"""`kitaru schedule …`: invoke a flow's route on a cron schedule (FlowSchedule)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from kitaru.cli.base import client, input_option, kitaru_command, tag_option, version_option
from kitaru.cli.output import Output, fields, parse_inputs, table

if TYPE_CHECKING:
    from kitaru.client.schedules import ScheduleInfo

name_argument = click.argument("name", metavar="NAME")


def schedule_fields(info: ScheduleInfo) -> str:
    pairs = {
        "schedule": info.name,
        "flow": info.flow,
        "target": info.target,
        "cron": f"{info.schedule} ({info.time_zone})",
        "inputs": dict(info.inputs),
        "concurrency": info.concurrency_policy,
        "deadline": f"{info.starting_deadline_seconds}s"
        if info.starting_deadline_seconds
        else None,
        "keeps": f"{info.successful_runs_history_limit} completed, "
        f"{info.failed_runs_history_limit} failed runs",
        "suspended": "yes" if info.suspended else "no",
        "last tick": info.last_schedule_time,
        "next tick": info.next_schedule_time,
        "last success": info.last_successful_time,
        "active": ", ".join(info.active) or None,
    }
    if info.ready is False:
        pairs["problem"] = f"{info.reason}: {info.message}"
    return fields(pairs)


@click.group()
def schedule() -> None:
    """Run a flow's route on a cron schedule (CronJob semantics)."""


@schedule.command("create")
@name_argument
@click.argument("flow_name", metavar="FLOW")
@click.option(
    "--cron",
    required=True,
    help="Five cron fields (minute hour day-of-month month day-of-week), e.g. '0 3 * * *', "
    "or @hourly, @daily, @weekly, @monthly, @yearly.",
)
@click.option("--tz", "time_zone", default=None, help="IANA time zone, e.g. Europe/Berlin "
              "(default UTC).")  # fmt: skip
@tag_option
@version_option
@input_option
@click.option(
    "--concurrency-policy",
    type=click.Choice(["Allow", "Forbid", "Replace"]),
    default="Allow",
    show_default=True,
    help="A tick while a run is unfinished: start another, skip the tick, or cancel the run first.",
)
@click.option(
    "--starting-deadline-seconds",
    type=click.IntRange(min=1),
    default=None,
    help="Skip a tick not started within this many seconds (default: always run the latest "
    "missed tick).",
)
@click.option(
    "--successful-runs-history-limit",
    type=click.IntRange(0, 1000),
    default=3,
    show_default=True,
    help="Completed runs kept.",
)
@click.option(
    "--failed-runs-history-limit",
    type=click.IntRange(0, 1000),
    default=1,
    show_default=True,
    help="Failed or cancelled runs kept.",
)
@click.option("--suspend", is_flag=True, help="Create it paused.")
@kitaru_command
def create_command(
    name: str,
    flow_name: str,
    cron: str,
    time_zone: str | None,
    tag: str | None,
    version: int | None,
    input_: str | None,
    concurrency_policy: str,
    starting_deadline_seconds: int | None,
    successful_runs_history_limit: int,
    failed_runs_history_limit: int,
    suspend: bool,
) -> Output:
    """Invoke FLOW (no --tag/--version: the default route) on a cron schedule.

    Each tick's run resolves the route as it stands then.
    """
    info = client().schedules.create(
        name,
        flow_name,
        cron,
        time_zone=time_zone,
        tag=tag,
        version=version,
        inputs=parse_inputs(input_),
        concurrency_policy=concurrency_policy,
        starting_deadline_seconds=starting_deadline_seconds,
        successful_runs_history_limit=successful_runs_history_limit,
        failed_runs_history_limit=failed_runs_history_limit,
        suspend=suspend,
    )
    return Output(
        item=info.to_json(),
        text=f"Scheduled {info.name}: {info.flow} ({info.target}) on '{info.schedule}' "
        f"({info.time_zone})\n",
    )


@schedule.command("list")
@click.option("--flow", "flow_name", default=None, help="Only schedules of this flow.")
@kitaru_command
def list_command(flow_name: str | None) -> Output:
    """List schedules."""
    infos = client().schedules.list(flow_name)
    return Output(
        items=[i.to_json() for i in infos],
        text=table(
            ["SCHEDULE", "FLOW", "TARGET", "CRON", "TZ", "SUSPENDED", "LAST", "NEXT"],
            [
                [
                    i.name,
                    i.flow,
                    i.target,
                    i.schedule,
                    i.time_zone,
                    "yes" if i.suspended else "no",
                    i.last_schedule_time,
                    i.next_schedule_time,
                ]
                for i in infos
            ],
            empty="No schedules.",
        ),
    )


@schedule.command("show")
@name_argument
@kitaru_command
def show_command(name: str) -> Output:
    """Show a schedule: what it runs, when, its last and next tick, unfinished runs."""
    info = client().schedules.get(name)
    return Output(item=info.to_json(), text=schedule_fields(info))


@schedule.command("pause")
@name_argument
@kitaru_command
def pause_command(name: str) -> Output:
    """Start no new runs until resumed (unfinished runs go on)."""
    info = client().schedules.pause(name)
    return Output(item=info.to_json(), text=f"Paused {name}\n")


@schedule.command("resume")
@name_argument
@kitaru_command
def resume_command(name: str) -> Output:
    """Start runs again (the latest tick missed meanwhile runs now, unless past the
    starting deadline)."""
    info = client().schedules.resume(name)
    return Output(item=info.to_json(), text=f"Resumed {name}\n")


@schedule.command("delete")
@name_argument
@kitaru_command
def delete_command(name: str) -> Output:
    """Delete a schedule and its runs."""
    info = client().schedules.delete(name)
    return Output(item=info.to_json(), text=f"Deleted schedule {name}\n")
