"""The shell every command shares: `-o text|json`, envelopes, errors on stderr with exit 1."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

from kitaru.cli.output import JSON, TEXT, Output, render, render_error, terminal_safe
from kitaru.client.errors import KitaruError
from kitaru.core.payloads import DECODE_RECURSION_LIMIT

if TYPE_CHECKING:
    from kitaru.client import KitaruClient

OUTPUT_HELP = "Output format: readable text (default) or a JSON envelope."


def output_format(ctx: click.Context) -> str:
    """The command's `-o`, else the root's, else text."""
    for context in (ctx, ctx.find_root()):
        value = context.params.get("output")
        if value:
            return str(value)
    return TEXT


def command_path(ctx: click.Context) -> str:
    """`flow deployments list`: the command path without the program name."""
    return ctx.command_path.partition(" ")[2] or ctx.command_path


def _wants_json(argv: Sequence[str]) -> bool:
    """Whether the command line asks for `-o json` (read raw: a usage error can stop
    click before it parses the option)."""
    pairs = zip(argv, [*argv[1:], ""], strict=True)
    return any(
        arg in ("-ojson", "--output=json") or (arg in ("-o", "--output") and nxt == JSON)
        for arg, nxt in pairs
    )


class KitaruGroup(click.Group):
    """The root command. A usage error (an unknown option, a value of the wrong type) is
    an error like any other: exit code 1, and the JSON error envelope with `-o json`."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        # Objects as deep as the API server stores can be listed and printed (payloads).
        sys.setrecursionlimit(max(sys.getrecursionlimit(), DECODE_RECURSION_LIMIT))
        if not standalone_mode:
            return super().main(argv, prog_name, complete_var, False, **extra)
        try:
            code = super().main(argv, prog_name, complete_var, False, **extra)
        except click.UsageError as error:
            if _wants_json(argv):
                name = command_path(error.ctx) if error.ctx else "kitaru"
                usage = KitaruError(error.format_message(), kind="UsageError")
                click.echo(render_error(name, usage, JSON), err=True, nl=False)
            else:
                error.show()
            sys.exit(1)
        except click.ClickException as error:
            error.show()
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def kitaru_command(func: Callable[..., Output]) -> Callable[..., None]:
    """Add `-o`, print the Output as text or a JSON envelope, turn KitaruErrors into exit 1."""

    @click.option("-o", "--output", type=click.Choice([TEXT, JSON]), default=None, help=OUTPUT_HELP)
    @functools.wraps(func)
    def wrapper(output: str | None, **kwargs: Any) -> None:
        ctx = click.get_current_context()
        fmt = output_format(ctx)
        name = command_path(ctx)
        try:
            out = func(**kwargs)
        except KitaruError as error:
            click.echo(render_error(name, error, fmt), err=True, nl=False)
            ctx.exit(1)
        if out.stderr and fmt == TEXT:
            click.echo(terminal_safe(out.stderr), err=True, nl=False)
        click.echo(render(name, out, fmt), nl=False)
        ctx.exit(out.exit_code)

    return wrapper


def is_json() -> bool:
    return output_format(click.get_current_context()) == JSON


def client() -> KitaruClient:
    """The client on the active connection (imported here: keeps `--help` fast)."""
    from kitaru.client import KitaruClient

    return KitaruClient()


tag_option = click.option("--tag", default=None, help="Route (tag) to resolve, e.g. stable.")
idempotency_key_option = click.option(
    "--idempotency-key",
    default=None,
    metavar="KEY",
    help="Start at most one execution for this key (per flow, 24 h): a repeat returns it.",
)
version_option = click.option("--version", type=int, default=None, help="Exact version.")
input_option = click.option(
    "--input",
    "-i",
    "input_",
    default=None,
    metavar="JSON|@FILE",
    help="Inputs as a JSON object, or @path/to/file.json.",
)


def retention_options(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--ttl-seconds-after-finished` and `--history-limit`: how long finished runs of
    `what` are kept (the command builds a `Retention` from the two)."""
    ttl = click.option(
        "--ttl-seconds-after-finished",
        type=click.IntRange(min=0),
        default=None,
        help=f"Delete finished runs of {what} this long after they finish "
        "(default: the operator's, a week).",
    )
    limit = click.option(
        "--history-limit",
        type=click.IntRange(min=0),
        default=None,
        help=f"Delete a finished run of {what} once this many newer runs of the flow exist "
        "(default: the operator's, 1000).",
    )
    return lambda command: ttl(limit(command))
