"""`KitaruClient().schedules`: invoke a flow's route on a cron schedule (FlowSchedule).

Creating one checks everything first — the name, the cron expression and time zone,
the selector, the inputs against the route's version as it stands now — so a bad
request creates nothing. The operator starts each tick's run and resolves it then.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from kitaru.client.errors import Conflict, InvalidArguments, NotFound
from kitaru.client.kube import AlreadyExists
from kitaru.client.rules import core_errors
from kitaru.core.cron import InvalidSchedule
from kitaru.core.inputs import check_inputs, merge_inputs, validate_inputs
from kitaru.core.names import SCHEDULES, InvalidName, validate_flow, validate_schedule_name
from kitaru.core.schedules import build_schedule

if TYPE_CHECKING:
    from kitaru.client.client import KitaruClient


@dataclass(frozen=True)
class ScheduleInfo:
    """One FlowSchedule: what it runs, when, and what it last did."""

    name: str
    flow: str
    schedule: str
    time_zone: str
    tag: str | None
    version: int | None
    target: str
    inputs: Mapping[str, Any] = field(default_factory=dict)
    concurrency_policy: str = "Allow"
    starting_deadline_seconds: int | None = None
    successful_runs_history_limit: int = 3
    failed_runs_history_limit: int = 1
    suspended: bool = False
    ready: bool | None = None
    reason: str | None = None
    message: str | None = None
    last_schedule_time: str | None = None
    next_schedule_time: str | None = None
    last_successful_time: str | None = None
    active: tuple[str, ...] = ()
    created: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["inputs"] = dict(self.inputs)
        data["active"] = list(self.active)
        return data


def schedule_info(obj: dict[str, Any]) -> ScheduleInfo:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    tag, version = spec.get("tag"), spec.get("version")
    target = f"tag {tag}" if tag else (f"version {version}" if version else "default")
    return ScheduleInfo(
        name=obj["metadata"]["name"],
        flow=spec.get("flow", ""),
        schedule=spec.get("schedule", ""),
        time_zone=spec.get("timeZone") or "UTC",
        tag=tag,
        version=version,
        target=target,
        inputs=spec.get("inputs") or {},
        concurrency_policy=spec.get("concurrencyPolicy", "Allow"),
        starting_deadline_seconds=spec.get("startingDeadlineSeconds"),
        successful_runs_history_limit=spec.get("successfulRunsHistoryLimit", 3),
        failed_runs_history_limit=spec.get("failedRunsHistoryLimit", 1),
        suspended=bool(spec.get("suspend")),
        ready=None if ready is None else ready.get("status") == "True",
        reason=ready.get("reason") if ready else None,
        message=ready.get("message") if ready else None,
        last_schedule_time=status.get("lastScheduleTime"),
        next_schedule_time=status.get("nextScheduleTime"),
        last_successful_time=status.get("lastSuccessfulTime"),
        active=tuple(status.get("active") or ()),
        created=obj["metadata"].get("creationTimestamp"),
    )


def _checked_name(name: str) -> str:
    try:
        return validate_schedule_name(name)
    except InvalidName as exc:
        raise InvalidArguments(str(exc), kind="InvalidName") from exc


class Schedules:
    """FlowSchedules in the connection's project."""

    def __init__(self, client: KitaruClient) -> None:
        self._client = client

    def _get(self, name: str) -> dict[str, Any]:
        obj = self._client.kube.get(SCHEDULES, _checked_name(name))
        if obj is None:
            raise NotFound(f"schedule {name!r} not found", kind="ScheduleNotFound")
        return obj

    def create(
        self,
        name: str,
        flow: str,
        cron: str,
        *,
        time_zone: str | None = None,
        tag: str | None = None,
        version: int | None = None,
        inputs: Mapping[str, Any] | None = None,
        concurrency_policy: str = "Allow",
        starting_deadline_seconds: int | None = None,
        successful_runs_history_limit: int = 3,
        failed_runs_history_limit: int = 1,
        suspend: bool = False,
    ) -> ScheduleInfo:
        """Schedule runs of `flow` by tag or version (neither ⇒ `default`) on `cron`
        (five fields or @daily etc.) in `time_zone` (IANA, default UTC)."""
        inputs = {} if inputs is None else inputs
        try:
            body = build_schedule(
                name,
                flow,
                cron,
                time_zone=time_zone,
                tag=tag,
                version=version,
                inputs={},
                concurrency_policy=concurrency_policy,
                starting_deadline_seconds=starting_deadline_seconds,
                successful_runs_history_limit=successful_runs_history_limit,
                failed_runs_history_limit=failed_runs_history_limit,
                suspend=suspend,
            )
        except InvalidSchedule as exc:
            raise InvalidArguments(exc.message, kind=exc.reason) from exc
        except InvalidName as exc:
            raise InvalidArguments(str(exc), kind=type(exc).__name__) from exc
        with core_errors():
            check_inputs(inputs)
        # The route must resolve now and accept the inputs: the same check as invoke.
        deployment = self._client.deployments.get(flow, tag=tag, version=version)
        with core_errors():
            validate_inputs(merge_inputs(deployment.inputs, inputs), deployment.input_schema)
        body["spec"]["inputs"] = dict(inputs)
        try:
            return schedule_info(self._client.kube.create(SCHEDULES, body))
        except AlreadyExists as exc:
            raise Conflict(
                f"schedule {name!r} already exists: delete it first (kitaru schedule delete "
                f"{name}) or choose another name",
                kind="ScheduleExists",
            ) from exc

    def get(self, name: str) -> ScheduleInfo:
        return schedule_info(self._get(name))

    def list(self, flow: str | None = None) -> builtins.list[ScheduleInfo]:
        """Schedules (of one flow, or all), by name."""
        selector = ""
        if flow is not None:
            try:
                validate_flow(flow)
            except InvalidName as exc:
                raise InvalidArguments(str(exc), kind="InvalidName") from exc
            selector = f"spec.flow={flow}"
        objects = self._client.kube.items(SCHEDULES, field_selector=selector)
        return sorted((schedule_info(o) for o in objects), key=lambda s: s.name)

    def _suspend(self, name: str, suspend: bool) -> ScheduleInfo:
        self._get(name)
        return schedule_info(
            self._client.kube.patch(SCHEDULES, name, {"spec": {"suspend": suspend}})
        )

    def pause(self, name: str) -> ScheduleInfo:
        """Start no new runs until resumed (unfinished runs go on)."""
        return self._suspend(name, True)

    def resume(self, name: str) -> ScheduleInfo:
        """Start runs again; the latest tick missed while paused runs at once, if within
        the schedule's starting deadline (CronJob's rule)."""
        return self._suspend(name, False)

    def delete(self, name: str) -> ScheduleInfo:
        """Delete the schedule; its runs go with it (owner references)."""
        info = schedule_info(self._get(name))
        self._client.kube.delete(SCHEDULES, name)
        return info
