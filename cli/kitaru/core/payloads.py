"""What a flow's inputs and results may be: plain JSON, shallow and small enough for
every part that decodes or carries them.

Inputs and results pass through the API server (which refuses nesting beyond 10 000
levels and objects beyond etcd's 1.5 MiB), the operator (pydantic-core's JSON parser
stops at 200 levels, Python's `json` near 1 000), the run's environment (Linux holds
one variable to 128 KiB, MAX_ARG_STRLEN), the termination message (4 KiB), kubectl and
the CLI. Bounds tighter than all of them, checked where the data enters, keep every one
of them working, and the error names the bound instead of a parser deep inside.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from kitaru.core.names import shown

MAX_DEPTH = 64
KIB = 1024

# What the API server stores may still be nested up to its own limit (kubectl creates
# anything). A process that reads every object of a namespace (the operator, the CLI)
# raises Python's recursion limit to DECODE_RECURSION_LIMIT: json decodes one frame a
# level, and deep copies, dataclasses.asdict and indented json.dumps take a few more.
API_MAX_DEPTH = 10_000
DECODE_RECURSION_LIMIT = 4 * API_MAX_DEPTH


def too_large(what: str, size: int, limit: int) -> str:
    """`what` is `size` bytes, over `limit`: exact numbers, so a near miss reads as one."""
    return f"{what} {size:,} bytes as JSON; at most {limit:,} ({limit // KIB} KiB)"


def _where(path: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in path)


def json_problem(value: Any, max_depth: int = MAX_DEPTH) -> str | None:
    """What keeps `value` from being plain, finite JSON nested at most `max_depth` levels
    (None when nothing does). Iterative, so a hostile depth cannot exhaust the stack."""
    stack: list[tuple[tuple[str | int, ...], Any, int]] = [((), value, 1)]
    while stack:
        path, item, depth = stack.pop()
        at = f" at '{_where(path)}'" if path else ""
        if isinstance(item, Mapping | list | tuple):
            if depth > max_depth:
                under = f" under '{path[0]}'" if path else ""
                return f"nested more than {max_depth} levels deep{under}"
            if isinstance(item, Mapping):
                for key, child in item.items():
                    if not isinstance(key, str):
                        return f"key {shown(key)}{at} is not a string"
                    stack.append(((*path, key), child, depth + 1))
            else:
                stack.extend(((*path, i), child, depth + 1) for i, child in enumerate(item))
        elif isinstance(item, float) and not math.isfinite(item):
            return f"{item}{at} is not a JSON number (numbers must be finite)"
        elif item is not None and not isinstance(item, str | int | float | bool):
            return (
                f"{type(item).__name__}{at} is not a JSON value "
                "(use a string, number, boolean, null, list or object)"
            )
    return None
