"""What the dashboard's pages show, computed by pure functions from client records.

The invoke form is generated from a version's input schema (`form_fields`) and read
back into inputs (`inputs_from_form`); the inputs are then validated by the same core
function the CLI uses, inside `Deployments.invoke`. Per-version run statistics and
their SVG charts (`version_stats`, `success_chart`, `duration_chart`) are drawn here,
server-side, so the pages need no chart library.
"""

from __future__ import annotations

import json
import shlex
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Any

from kitaru.client.records import ExecutionInfo
from kitaru.core.inputs import InvalidInputs

TEXT, INTEGER, NUMBER, BOOLEAN, CHOICE, JSON_VALUE = (
    "text",
    "integer",
    "number",
    "boolean",
    "choice",
    "json",
)


@dataclass(frozen=True)
class FormField:
    """One input of the invoke form, and what the browser checks before submitting."""

    name: str
    kind: str
    required: bool
    value: str = ""
    description: str = ""
    choices: tuple[str, ...] = ()
    # HTML validation attributes (min, max, minlength, maxlength, pattern).
    attrs: Mapping[str, str] = field(default_factory=dict)
    schema: Mapping[str, Any] = field(default_factory=dict)


def _single_type(prop: Mapping[str, Any]) -> str | None:
    """The one JSON type of a property (`Optional[x]` included), else None."""
    declared = prop.get("type")
    if isinstance(declared, str):
        return declared
    if isinstance(declared, list):
        types = [t for t in declared if t != "null"]
        return types[0] if len(types) == 1 else None
    options = [o for o in prop.get("anyOf") or [] if o.get("type") != "null"]
    if len(options) == 1:
        return _single_type(options[0])
    return None


def _kind(prop: Mapping[str, Any]) -> str:
    if isinstance(prop.get("enum"), list) and all(
        isinstance(v, str | int | float | bool) and v is not None for v in prop["enum"]
    ):
        return CHOICE
    return {
        "string": TEXT,
        "integer": INTEGER,
        "number": NUMBER,
        "boolean": BOOLEAN,
    }.get(_single_type(prop) or "", JSON_VALUE)


def _as_text(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == TEXT and isinstance(value, str):
        return value
    if kind in (INTEGER, NUMBER, BOOLEAN, CHOICE):
        return json.dumps(value) if not isinstance(value, str) else value
    return json.dumps(value)


def _attrs(prop: Mapping[str, Any]) -> dict[str, str]:
    names = {
        "minimum": "min",
        "maximum": "max",
        "minLength": "minlength",
        "maxLength": "maxlength",
        "pattern": "pattern",
    }
    return {html: str(prop[key]) for key, html in names.items() if key in prop}


def form_fields(schema: Mapping[str, Any], deploy_inputs: Mapping[str, Any]) -> list[FormField]:
    """The form's fields, one per schema property, prefilled with the deploy-time value
    (else the schema's default)."""
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    fields = []
    for name, prop in properties.items():
        kind = _kind(prop)
        value = deploy_inputs.get(name, prop.get("default"))
        choices = tuple(_as_text(v, CHOICE) for v in prop["enum"]) if kind == CHOICE else ()
        fields.append(
            FormField(
                name=name,
                kind=kind,
                required=name in required,
                value=_as_text(value, kind),
                description=str(prop.get("description") or prop.get("title") or ""),
                choices=choices,
                attrs=_attrs(prop),
                schema=prop,
            )
        )
    return fields


def _parse(form_field: FormField, raw: str) -> Any:
    name, kind = form_field.name, form_field.kind
    if kind == TEXT:
        return raw
    if kind == CHOICE:
        for option in form_field.schema.get("enum") or []:
            if _as_text(option, CHOICE) == raw:
                return option
        raise InvalidInputs(f"input '{name}': {raw!r} is not one of {list(form_field.choices)}")
    if kind == BOOLEAN:
        if raw in ("true", "false"):
            return raw == "true"
        raise InvalidInputs(f"input '{name}': choose true or false, not {raw!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    if kind == INTEGER and not (isinstance(value, int) and not isinstance(value, bool)):
        raise InvalidInputs(f"input '{name}': {raw!r} is not a whole number")
    if kind == NUMBER and not (isinstance(value, int | float) and not isinstance(value, bool)):
        raise InvalidInputs(f"input '{name}': {raw!r} is not a number")
    if kind == JSON_VALUE and value is raw:
        raise InvalidInputs(f"input '{name}': {raw!r} is not JSON (quote strings: \"...\")")
    return value


def inputs_from_form(fields: Sequence[FormField], form: Mapping[str, str]) -> dict[str, Any]:
    """The invocation's inputs from the submitted form: each filled field parsed by its
    kind; an empty field is left out, so the deploy-time value applies."""
    inputs = {}
    for form_field in fields:
        raw = form.get(form_field.name, "")
        if form_field.kind != TEXT:
            raw = raw.strip()
        if raw == "":
            continue
        inputs[form_field.name] = _parse(form_field, raw)
    return inputs


# --- snippets --------------------------------------------------------------------------


def cli_snippet(flow: str, tag: str, inputs: Mapping[str, Any]) -> str:
    """`kitaru invoke` for a route."""
    args = ["kitaru", "invoke", flow, "--tag", tag]
    if inputs:
        args += ["--input", json.dumps(dict(inputs), separators=(",", ":"))]
    return " ".join(shlex.quote(a) for a in args)


def python_snippet(flow: str, tag: str, inputs: Mapping[str, Any]) -> str:
    """The SDK call for a route (no import of the producer's source needed)."""
    return (
        "from kitaru import KitaruClient\n\n"
        "handle = KitaruClient().deployments.invoke(\n"
        f"    flow={flow!r},\n    tag={tag!r},\n    inputs={dict(inputs)!r},\n)\n"
        "print(handle.wait())\n"
    )


# --- per-version statistics and charts -------------------------------------------------


@dataclass(frozen=True)
class VersionStats:
    """What the newest runs of one version came to: the canary decision's numbers."""

    version: int
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    active: int = 0
    durations: tuple[float, ...] = ()

    @property
    def success_rate(self) -> float | None:
        decided = self.completed + self.failed
        return self.completed / decided if decided else None

    @property
    def median_seconds(self) -> float | None:
        return statistics.median(self.durations) if self.durations else None


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def version_stats(runs: Iterable[ExecutionInfo]) -> list[VersionStats]:
    """Counts and durations of completed runs per resolved version, newest version first."""
    counts: dict[int, dict[str, Any]] = {}
    for run in runs:
        version = run.resolved_version
        if version is None:
            continue
        entry = counts.setdefault(
            version, {"completed": 0, "failed": 0, "cancelled": 0, "active": 0, "durations": []}
        )
        if run.status in ("completed", "failed", "cancelled"):
            entry[run.status] += 1
        else:
            entry["active"] += 1
        if run.status == "completed":
            took = _seconds(run.started, run.finished_at)
            if took is not None:
                entry["durations"].append(took)
    return [
        VersionStats(version=v, **{**c, "durations": tuple(c["durations"])})
        for v, c in sorted(counts.items(), reverse=True)
    ]


ROW, LABEL_WIDTH, BAR_WIDTH = 22, 48, 240


def _chart(rows: list[str], title: str) -> str:
    height = ROW * max(len(rows), 1) + 4
    width = LABEL_WIDTH + BAR_WIDTH + 110
    return (
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}"><title>{escape(title)}</title>'
        + "".join(rows)
        + "</svg>"
    )


def _label(index: int, text: str) -> str:
    return f'<text x="0" y="{index * ROW + 15}">{escape(text)}</text>'


def success_chart(stats: Sequence[VersionStats]) -> str:
    """Bars of each version's success rate (completed / (completed + failed))."""
    rows = []
    for i, s in enumerate(stats):
        rate = s.success_rate
        y = i * ROW + 3
        rows.append(_label(i, f"v{s.version}"))
        rows.append(
            f'<rect class="track" x="{LABEL_WIDTH}" y="{y}" width="{BAR_WIDTH}" height="16"/>'
        )
        if rate is not None:
            rows.append(
                f'<rect class="ok" x="{LABEL_WIDTH}" y="{y}" width="{rate * BAR_WIDTH:.1f}" '
                'height="16"/>'
            )
        text = f"{rate:.0%} of {s.completed + s.failed}" if rate is not None else "no finished runs"
        rows.append(f'<text x="{LABEL_WIDTH + BAR_WIDTH + 6}" y="{y + 12}">{escape(text)}</text>')
    return _chart(rows, "success rate per version")


def duration_chart(stats: Sequence[VersionStats]) -> str:
    """Each version's completed-run durations: a line from the fastest to the slowest run
    and a mark at the median, on one scale."""
    longest = max((max(s.durations) for s in stats if s.durations), default=0.0)
    scale = BAR_WIDTH / longest if longest else 0.0
    rows = []
    for i, s in enumerate(stats):
        y = i * ROW + 11
        rows.append(_label(i, f"v{s.version}"))
        if not s.durations:
            rows.append(f'<text x="{LABEL_WIDTH}" y="{y + 4}">no completed runs</text>')
            continue
        low, high, median = min(s.durations), max(s.durations), s.median_seconds or 0.0
        rows.append(
            f'<line class="range" x1="{LABEL_WIDTH + low * scale:.1f}" y1="{y}" '
            f'x2="{LABEL_WIDTH + high * scale:.1f}" y2="{y}"/>'
        )
        rows.append(
            f'<circle class="median" cx="{LABEL_WIDTH + median * scale:.1f}" cy="{y}" r="5"/>'
        )
        text = f"median {median:.1f}s, max {high:.1f}s ({len(s.durations)})"
        rows.append(f'<text x="{LABEL_WIDTH + BAR_WIDTH + 6}" y="{y + 4}">{escape(text)}</text>')
    return _chart(rows, "duration of completed runs per version")


def last_run_per_tag(runs: Iterable[ExecutionInfo]) -> dict[str, ExecutionInfo]:
    """The newest run each tag resolved, from runs given newest first."""
    latest: dict[str, ExecutionInfo] = {}
    for run in runs:
        tag = run.resolved_tag or run.tag
        if tag and tag not in latest:
            latest[tag] = run
    return latest
