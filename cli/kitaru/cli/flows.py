"""`kitaru flow …` and `kitaru flow deployments …`: routes and versions of deployed flows."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from kitaru.cli.base import (
    client,
    idempotency_key_option,
    input_option,
    kitaru_command,
    tag_option,
    version_option,
)
from kitaru.cli.output import Output, fields, parse_inputs, table
from kitaru.client.errors import InvalidArguments
from kitaru.core.names import PROMOTION_DEFAULT_MIN_RUNS, PROMOTION_DEFAULT_MIN_SUCCESS

if TYPE_CHECKING:
    from kitaru.client import DeploymentInfo
    from kitaru.client.records import RouteInfo, Tag


def _tags(info: DeploymentInfo) -> str:
    return ", ".join(_tag_label(t) for t in info.tags) or "-"


def _tag_label(tag: Tag) -> str:
    if tag.weight is not None:
        return f"{tag.tag} ({tag.weight}%)"
    return tag.tag + ("" if tag.exclusive else " (shared)")


def _versions_table(infos: list[DeploymentInfo]) -> str:
    return table(
        ["FLOW", "VERSION", "TAGS", "SNAPSHOT", "IMAGE", "CREATED"],
        [
            [d.flow, d.version, _tags(d), d.snapshot_name, d.image or d.runner_image, d.created]
            for d in infos
        ],
        empty="No deployments.",
    )


reason_option = click.option(
    "--reason", default=None, help="Why: recorded in the route history (kitaru flow history)."
)


@click.group()
def flow() -> None:
    """Deployed flows: routing tags and versions."""


@flow.command("tag")
@click.argument("flow_name", metavar="FLOW")
@click.argument("tag")
@click.option("--version", type=int, default=None, help="The version the tag routes to.")
@click.option("--exclusive", is_flag=True, help="Move the tag here from every other version.")
@click.option(
    "--split",
    default=None,
    metavar="V=PCT,...",
    help="Split the tag between versions by weight, e.g. 2=90,3=10 (percents adding up to "
    "100); each invocation runs one of them (invoke --key makes it sticky).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Move the tag even if the version would reject inputs its current version accepts.",
)
@click.option(
    "--expires",
    default=None,
    metavar="DURATION",
    help="Remove the tag after this long (30m, 12h, 7d); never on default. "
    "Without it the tag does not expire.",
)
@reason_option
@kitaru_command
def tag_command(
    flow_name: str,
    tag: str,
    version: int | None,
    exclusive: bool,
    split: str | None,
    force: bool,
    expires: str | None,
    reason: str | None,
) -> Output:
    """Route TAG to a version: exclusive moves it, shared adds the version; --split
    sends each invocation to one of several versions by weight.

    Refused when a version new to the tag has an input schema that rejects inputs the
    tag's current version accepts (a removed or retyped input, a new required one),
    unless --force. With --expires the operator removes the tag then, and records it in
    the history.
    """
    if version is None and split is None:
        raise click.UsageError("Missing option '--version' (or --split V=PCT,...).")
    route = client().deployments.tag(
        flow_name,
        tag,
        version,
        exclusive=exclusive,
        force=force,
        reason=reason,
        expires=expires,
        split=split,
    )
    until = f"; expires {route.expires_at}" if route.expires_at else ""
    tagged = (
        f"Split {flow_name} {tag}" if route.split else f"Tagged {flow_name} v{version} as {tag}"
    )
    return Output(
        item=route.to_json(),
        text=f"{tagged} ({route.mode}); {tag} now routes to {route.describe()}{until}",
    )


@flow.command("shadow")
@click.argument("flow_name", metavar="FLOW")
@click.argument("tag")
@click.option("--version", type=int, default=None, help="The candidate version to mirror to.")
@click.option(
    "--fraction",
    type=float,
    default=None,
    help="The share of the tag's invocations to mirror, above 0 and at most 1 (0.2).",
)
@click.option("--off", is_flag=True, help="Stop mirroring.")
@kitaru_command
def shadow_command(
    flow_name: str, tag: str, version: int | None, fraction: float | None, off: bool
) -> Output:
    """Mirror a fraction of TAG's invocations to a candidate version (shadow runs).

    A shadow run gets the same inputs; its result is kept beside the primary's and never
    returned to the caller. Compare one pair with `kitaru executions diff EXECUTION`; the
    route's status sums up how often they agree (kitaru flow show).
    """
    route = client().deployments.shadow(flow_name, tag, version, fraction, off=off)
    if route.shadow is None:
        return Output(item=route.to_json(), text=f"{flow_name} {tag} has no shadow runs")
    return Output(
        item=route.to_json(),
        text=f"Mirroring {route.shadow['fraction']:g} of {flow_name} {tag}'s invocations "
        f"to v{route.shadow['version']}",
    )


@flow.command("untag")
@click.argument("flow_name", metavar="FLOW")
@click.argument("tag")
@click.option("--version", type=int, default=None, help="Version to take the tag off.")
@reason_option
@kitaru_command
def untag_command(flow_name: str, tag: str, version: int | None, reason: str | None) -> Output:
    """Take TAG off a version ('default' can only be moved, never removed)."""
    route = client().deployments.untag(flow_name, tag, version=version, reason=reason)
    rest = ", ".join(f"v{v}" for v in route.versions)
    text = f"Removed tag {tag} from {flow_name}" + (f" v{version}" if version else "")
    text += f"; it still routes to {rest}" if rest else f"; {tag} no longer exists"
    return Output(item=route.to_json(), text=text)


@flow.command("limit")
@click.argument("flow_name", metavar="FLOW")
@click.argument("max_concurrency", metavar="N", type=int, required=False)
@click.option("--tag", default=None, help="Limit the runs invoked through this tag only.")
@click.option("--clear", is_flag=True, help="Remove the limit.")
@kitaru_command
def limit_command(
    flow_name: str, max_concurrency: int | None, tag: str | None, clear: bool
) -> Output:
    """At most N runs of FLOW (or of its TAG) active at once; more wait, Queued, in order."""
    if clear == (max_concurrency is not None):
        raise InvalidArguments(
            "give a limit N or --clear, not both or neither", kind="InvalidLimit"
        )
    route = client().deployments.limit(flow_name, max_concurrency, tag=tag)
    scope = f"tag {tag} of {flow_name}" if tag else flow_name
    limit = route.max_concurrency if tag else route.flow_max_concurrency
    text = f"{scope}: at most {limit} active run(s)" if limit else f"{scope}: no limit"
    return Output(item=route.to_json(), text=text)


@flow.command("history")
@click.argument("flow_name", metavar="FLOW")
@click.argument("tag", required=False)
@click.option("--at", "at", default=None, help="What the tags routed to at this time (ISO 8601).")
@kitaru_command
def history_command(flow_name: str, tag: str | None, at: str | None) -> Output:
    """Recorded route changes of FLOW (of TAG only), or with --at what they routed to then.

    BY says who and how it is known: verified (checked by the API server against the
    requesting user) or inferred (the field manager the writer named)."""
    from kitaru.core.history import shown_by

    history = client().deployments.history(flow_name, tag, at=at)
    if at is not None:
        routes = history["routes"]
        lines = [
            f"{t}: " + (", ".join(f"v{v}" for v in vs) if vs else "(no route)")
            for t, vs in routes.items()
        ]
        text = f"{flow_name} at {history['at']}:\n" + ("\n".join(lines) or "(no routes)")
        return Output(item=history, text=text)
    changes = history["changes"]
    rows = [
        [
            str(c["seq"]),
            c["at"],
            c["tag"],
            c["action"],
            _recorded_target(c, "from"),
            _recorded_target(c, "to"),
            shown_by(c),
            c.get("reason", ""),
        ]
        for c in changes
    ]
    header = ["SEQ", "AT", "TAG", "ACTION", "FROM", "TO", "BY", "REASON"]
    text = table(header, rows) if rows else f"no recorded route change of {flow_name}"
    return Output(items=changes, text=text)


def _shadow_label(route: RouteInfo) -> str:
    """`v3 20% (agree 9/10)`: a route's shadow and how its runs compare so far."""
    if not route.shadow:
        return "-"
    label = f"v{route.shadow['version']} {route.shadow['fraction']:.0%}"
    summary = route.shadow_summary or {}
    if summary.get("version") == route.shadow["version"] and summary.get("compared"):
        label += f" (agree {summary['agreed']}/{summary['compared']})"
    return label


def _recorded_target(change: dict, side: str) -> str:
    """One side of a recorded change: `2,3`, or `2=90,3=10` for a split tag."""
    split = change.get(f"{side}Split") or []
    if split:
        return ",".join(f"{w['version']}={w['weight']}" for w in split)
    return ",".join(map(str, change.get(f"{side}Versions", []))) or "-"


@flow.command("rollback")
@click.argument("flow_name", metavar="FLOW")
@click.argument("tag")
@reason_option
@kitaru_command
def rollback_command(flow_name: str, tag: str, reason: str | None) -> Output:
    """Move TAG back to what it routed to before its last recorded change."""
    route = client().deployments.rollback(flow_name, tag, reason=reason)
    return Output(
        item=route.to_json(), text=f"Rolled back {flow_name} {tag}: routes to {route.describe()}"
    )


@flow.command("promote")
@click.argument("flow_name", metavar="FLOW")
@click.option("--from", "from_tag", default=None, help="The tag whose version is the candidate.")
@click.option("--to", "to_tag", required=True, help="The tag to move once the gate is met.")
@click.option(
    "--after",
    default=None,
    metavar="DURATION",
    help="No move before this long from now (30m, 1h, 7d; default 0: none).",
)
@click.option(
    "--min-runs",
    type=int,
    default=PROMOTION_DEFAULT_MIN_RUNS,
    show_default=True,
    help="Finished runs of the candidate needed before the gate is decided.",
)
@click.option(
    "--min-success",
    type=float,
    default=PROMOTION_DEFAULT_MIN_SUCCESS,
    show_default=True,
    help="Fraction of those runs that must have completed (0..1).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Move even if the candidate would reject inputs the tag's current version accepts.",
)
@click.option("--cancel", is_flag=True, help="Cancel the waiting promotion of --to instead.")
@reason_option
@kitaru_command
def promote_command(
    flow_name: str,
    from_tag: str | None,
    to_tag: str,
    after: str | None,
    min_runs: int,
    min_success: float,
    force: bool,
    cancel: bool,
    reason: str | None,
) -> Output:
    """Move --to to the version --from routes to once its runs meet the gate.

    The operator counts the candidate's runs that finish after now (any selector); once
    --after has passed and --min-runs have finished, it moves the tag if the success
    rate is at least --min-success (recorded in kitaru flow history), or ends the
    promotion NotPromoted saying why. With --cancel, cancels the waiting promotion.
    """
    deployments = client().deployments
    if cancel:
        cancelled = deployments.cancel_promotion(flow_name, to_tag)
        names = ", ".join(p.name for p in cancelled)
        return Output(
            items=[p.to_json() for p in cancelled],
            text=f"Cancelled promotion {names}: {to_tag} of {flow_name} does not move",
        )
    if from_tag is None:
        raise InvalidArguments(
            "name the candidate's tag with --from (e.g. --from canary), or pass --cancel",
            kind="UsageError",
        )
    promotion = deployments.promote(
        flow_name,
        from_tag,
        to_tag,
        after=after,
        min_runs=min_runs,
        min_success=min_success,
        force=force,
        reason=reason,
    )
    window = f" after {after}" if after and after.strip() != "0" else ""
    return Output(
        item=promotion.to_json(),
        text=f"Promotion {promotion.name}: {to_tag} of {flow_name} moves to the version "
        f"{from_tag} routes to{window} once {min_runs} runs finished with success >= "
        f"{min_success:g} (follow it with: kitaru flow promotions {flow_name})",
    )


@flow.command("promotions")
@click.argument("flow_name", metavar="FLOW")
@click.option("--to", "to_tag", default=None, help="Only promotions of this tag.")
@kitaru_command
def promotions_command(flow_name: str, to_tag: str | None) -> Output:
    """Promotions of FLOW, oldest first: their gate, phase and measured runs."""
    promotions = client().deployments.promotions(flow_name, to_tag)
    rows = [
        [
            p.name,
            p.from_tag,
            p.to_tag,
            p.candidate_version or "-",
            p.phase or "New",
            f"{p.runs}/{p.min_runs}",
            "-" if p.success_rate is None else f"{p.success_rate:.2f}",
            p.message or "",
        ]
        for p in promotions
    ]
    header = ["NAME", "FROM", "TO", "CANDIDATE", "PHASE", "RUNS", "SUCCESS", "MESSAGE"]
    return Output(
        items=[p.to_json() for p in promotions],
        text=table(header, rows, empty=f"No promotions of {flow_name}."),
    )


@flow.command("list")
@kitaru_command
def list_command() -> Output:
    """List the flows of the project with their versions and tags."""
    flows = client().deployments.flows()
    return Output(
        items=[f.to_json() for f in flows],
        text=table(
            ["FLOW", "VERSIONS", "DEFAULT", "TAGS"],
            [[f.flow, len(f.versions), f.default_version, list(f.tags)] for f in flows],
            empty="No flows deployed in this project.",
        ),
    )


@flow.command("show")
@click.argument("flow_name", metavar="FLOW")
@kitaru_command
def show_command(flow_name: str) -> Output:
    """Show a flow: its tags and where they route, and its versions."""
    deployments = client().deployments
    versions = deployments.list(flow_name)
    routes = deployments.routes(flow_name)
    if not versions and not routes:
        from kitaru.client.deployments import not_found
        from kitaru.core.routing import no_deployments

        raise not_found(no_deployments(flow_name))
    text = (
        f"Flow {flow_name}\n\n"
        + table(
            ["TAG", "MODE", "VERSIONS", "READY", "EXPIRES", "SHADOW"],
            [
                [
                    r.tag,
                    r.mode,
                    r.describe() if r.split else list(r.versions),
                    r.ready,
                    r.expires_at or "-",
                    _shadow_label(r),
                ]
                for r in routes
            ],
            empty="No tags.",
        )
        + "\n"
        + _versions_table(versions)
    )
    item = {
        "flow": flow_name,
        "routes": [r.to_json() for r in routes],
        "deployments": [d.to_json() for d in versions],
    }
    return Output(item=item, text=text)


@flow.command("delete")
@click.argument("flow_name", metavar="FLOW")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@kitaru_command
def delete_command(flow_name: str, yes: bool) -> Output:
    """Delete a whole flow: every tag (default included) and every version."""
    if not yes and not click.confirm(f"Delete flow {flow_name}, all its tags and versions?"):
        raise InvalidArguments("not deleted", kind="Aborted")
    summary = client().deployments.delete_flow(flow_name)
    versions = ", ".join(f"v{v}" for v in summary.versions) or "none"
    return Output(
        item=summary.to_json(),
        text=f"Deleted flow {flow_name}: versions {versions}; "
        f"tags {', '.join(summary.tags) or 'none'}",
    )


# --- kitaru flow deployments ----------------------------------------------------------------


@flow.group()
def deployments() -> None:
    """Deployment versions of a flow."""


@deployments.command("list")
@click.argument("flow_name", metavar="[FLOW]", required=False)
@kitaru_command
def deployments_list(flow_name: str | None) -> Output:
    """List deployment versions (of FLOW, or of every flow) with their tags."""
    infos = client().deployments.list(flow_name)
    return Output(items=[d.to_json() for d in infos], text=_versions_table(infos))


@deployments.command("show")
@click.argument("flow_name", metavar="FLOW")
@tag_option
@version_option
@kitaru_command
def deployments_show(flow_name: str, tag: str | None, version: int | None) -> Output:
    """Show the version a tag or version resolves to (neither: the default route)."""
    info = client().deployments.get(flow_name, tag=tag, version=version)
    text = fields(
        {
            "flow": info.flow,
            "version": info.version,
            "name": info.name,
            "snapshot": info.snapshot_name,
            "tags": _tags(info),
            "entrypoint": info.entrypoint,
            "image": info.image or f"{info.runner_image} (stack runner image)",
            "source": f"{info.source_config_map} sha256:{info.source_sha256}"
            if info.source_config_map
            else None,
            "git": f"{info.git_commit}{' (dirty)' if info.git_dirty else ''}"
            if info.git_commit
            else None,
            "inputs": dict(info.inputs),
            "ready": info.ready,
            "created": info.created,
        }
    )
    return Output(item=info.to_json(), text=text)


@deployments.command("delete")
@click.argument("flow_name", metavar="FLOW")
@click.option("--version", type=int, required=True, help="The version to delete.")
@kitaru_command
def deployments_delete(flow_name: str, version: int) -> Output:
    """Delete one version (refused while it holds an exclusive tag)."""
    info = client().deployments.delete(flow_name, version)
    return Output(item=info.to_json(), text=f"Deleted {flow_name} v{version} ({info.name})")


@deployments.command("prune")
@click.argument("flow_name", metavar="FLOW")
@click.option(
    "--keep",
    type=click.IntRange(min=0),
    required=True,
    help="How many of the newest versions to keep, tagged or not.",
)
@kitaru_command
def deployments_prune(flow_name: str, keep: int) -> Output:
    """Delete old versions that hold no tag (never a tagged one; numbers are never reused)."""
    summary = client().deployments.prune(flow_name, keep)
    deleted = ", ".join(f"v{v}" for v in summary.deleted) or "nothing"
    text = f"Pruned {flow_name}: deleted {deleted}"
    if summary.kept_tagged:
        text += f"; kept tagged {', '.join(f'v{v}' for v in summary.kept_tagged)}"
    return Output(item=summary.to_json(), text=text)


@deployments.command("curl")
@click.argument("flow_name", metavar="FLOW")
@tag_option
@version_option
@input_option
@click.option(
    "--key",
    "routing_key",
    default=None,
    metavar="KEY",
    help="Routing key for a split tag: the same key always runs the same version.",
)
@idempotency_key_option
@kitaru_command
def deployments_curl(
    flow_name: str,
    tag: str | None,
    version: int | None,
    input_: str | None,
    routing_key: str | None,
    idempotency_key: str | None,
) -> Output:
    """Print a curl command that starts an execution of the resolved version (of the
    tag itself when it is split; with --idempotency-key: at most one, however often the
    command runs)."""
    from kitaru.client.curl import render_curl
    from kitaru.client.rules import core_errors
    from kitaru.core.idempotency import validate_idempotency_key

    inputs = parse_inputs(input_)
    if idempotency_key is not None:
        with core_errors():
            validate_idempotency_key(idempotency_key)
    kitaru = client()
    resolution = kitaru.deployments.resolve(
        flow_name, tag=tag, version=version, routing_key=routing_key
    )
    split = resolution.split
    connection = kitaru.connection
    script = render_curl(
        server=connection.server.value or "",
        namespace=kitaru.project,
        flow=flow_name,
        version=resolution.version,
        inputs=inputs,
        tag=resolution.tag if version is None else None,
        ca_file=connection.ca_path(),
        split=",".join(f"{w.version}={w.weight}" for w in split.split) if split else None,
        routing_key=routing_key,
        idempotency_key=idempotency_key,
    )
    item = {
        "flow": flow_name,
        "tag": resolution.tag,
        # A split tag's command is not pinned: which version runs is chosen per execution.
        "version": None if split and not split.sticky else resolution.version,
        "script": script,
    }
    return Output(item=item, text=script)


@deployments.command("logs")
@click.argument("flow_name", metavar="FLOW")
@tag_option
@version_option
@kitaru_command
def deployments_logs(flow_name: str, tag: str | None, version: int | None) -> Output:
    """Logs of the latest execution of the version a tag or version resolves to."""
    kitaru = client()
    resolved = kitaru.deployments.resolve(flow_name, tag=tag, version=version).version
    latest = kitaru.executions.latest(flow_name, resolved)
    if latest is None:
        raise InvalidArguments(
            f"flow '{flow_name}' v{resolved} has no executions yet", kind="NoExecutions"
        )
    logs = kitaru.executions.logs(latest.exec_id)
    return Output(item={"exec_id": latest.exec_id, "version": resolved, "logs": logs}, text=logs)
