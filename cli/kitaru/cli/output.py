"""Pure helpers of the CLI: parsing `--input`, JSON envelopes, tables, key/value blocks."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kitaru.client.errors import InvalidArguments, KitaruError
from kitaru.core.payloads import MAX_DEPTH

TEXT = "text"
JSON = "json"

# What a terminal acts on instead of printing: C0 controls but newline and tab, DEL, C1
# controls (ANSI escapes start with ESC or CSI) and the bidirectional overrides that
# reorder text on screen ("Trojan Source"). Text output shows them escaped as \x1b, so
# a flow's result, message or log cannot move the cursor, clear the screen, retitle the
# window or hide what it prints; `-o json` carries them unchanged (JSON-escaped).
_TERMINAL_CONTROLS = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in (
        *(c for c in range(0x20) if chr(c) not in "\n\t"),
        *range(0x7F, 0xA0),
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
    )
}


def terminal_safe(text: str) -> str:
    """`text` with terminal control characters shown escaped (see _TERMINAL_CONTROLS)."""
    return text.translate(_TERMINAL_CONTROLS)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


def parse_inputs(raw: str | None) -> dict[str, Any]:
    """`--input` as a dict: a JSON object, or `@path` to a file holding one."""
    if raw is None:
        return {}
    where = "--input"
    if raw.startswith("@"):
        path = Path(raw[1:])
        where = f"--input file {path}"
        try:
            raw = path.read_text()
        except OSError as exc:
            raise InvalidArguments(
                f"cannot read {where}: {exc.strerror}", kind="InvalidInputs"
            ) from exc
    try:
        value = json.loads(raw, parse_constant=_not_json)
    except ValueError as exc:
        raise InvalidArguments(f"{where} is not valid JSON: {exc}", kind="InvalidInputs") from exc
    except RecursionError as exc:
        raise InvalidArguments(
            f"{where} is nested more than {MAX_DEPTH} levels deep", kind="InvalidInputs"
        ) from exc
    if not isinstance(value, dict):
        raise InvalidArguments(
            f'{where} must be a JSON object like \'{{"topic": "..."}}\', '
            f"not {type(value).__name__ if value is not None else 'null'}",
            kind="InvalidInputs",
        )
    return value


@dataclass
class Output:
    """What a command produced: a JSON item or items, and the text to print."""

    item: Any = None
    items: Sequence[Any] | None = None
    text: str = ""
    exit_code: int = 0
    stderr: str = ""


def envelope(command: str, out: Output) -> dict[str, Any]:
    """`{"command", "item"}` or `{"command", "items", "count"}`."""
    if out.items is not None:
        return {"command": command, "items": list(out.items), "count": len(out.items)}
    return {"command": command, "item": out.item}


def error_envelope(command: str, error: KitaruError) -> dict[str, Any]:
    return {"command": command, "error": {"message": error.message, "type": error.kind}}


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, default=str) + "\n"


def render(command: str, out: Output, fmt: str) -> str:
    if fmt == JSON:
        return to_json(envelope(command, out))
    text = terminal_safe(out.text)
    return text if not text or text.endswith("\n") else text + "\n"


def render_error(command: str, error: KitaruError, fmt: str) -> str:
    if fmt == JSON:
        return to_json(error_envelope(command, error))
    return terminal_safe(f"Error: {error.message}\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str = "") -> str:
    """A plain left-aligned table; `empty` is printed instead when there are no rows."""
    if not rows:
        return empty + "\n" if empty else ""
    cells = [[cell_text(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [headers, *cells]
    return "".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n"
        for line in lines
    )


def cell_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(cell_text(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def fields(pairs: Mapping[str, Any]) -> str:
    """`key: value` lines, keys aligned."""
    width = max((len(k) for k in pairs), default=0)
    return "".join(f"{(k + ':').ljust(width + 1)} {cell_text(v)}\n" for k, v in pairs.items())


def result_text(result: Any) -> str:
    return result if isinstance(result, str) else json.dumps(result, indent=2)


@contextmanager
def spinner(message: str, enabled: bool) -> Iterator[None]:
    """A spinner on stderr while the block runs (only on a terminal)."""
    if not enabled or not sys.stderr.isatty():
        yield
        return
    done = threading.Event()

    def spin() -> None:
        frames = "|/-\\"
        i = 0
        while not done.wait(0.1):
            sys.stderr.write(f"\r{frames[i % 4]} {message}")
            sys.stderr.flush()
            i += 1
        sys.stderr.write("\r" + " " * (len(message) + 2) + "\r")
        sys.stderr.flush()

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
