"""`KitaruClient().executions`: inspect, wait for, cancel and read the logs of executions."""

from __future__ import annotations

import builtins
import heapq
import time
from typing import TYPE_CHECKING, Any

from kitaru.client.errors import ExecutionTimeout, InvalidArguments, NotFound
from kitaru.client.handle import ExecutionHandle
from kitaru.client.kube import Expired
from kitaru.client.records import STATUSES, ExecutionInfo, execution_info
from kitaru.core.names import (
    INVOCATIONS,
    LABEL_INVOCATION,
    InvalidName,
    validate_execution_id,
    validate_flow,
)

if TYPE_CHECKING:
    from kitaru.client.client import KitaruClient

WATCH_CHUNK_SECONDS = 60


def phase_selector(status: str) -> str:
    """The field selector of executions in a Kitaru status (`pending` includes runs the
    operator has not picked up yet: no phase)."""
    if status not in STATUSES:
        raise InvalidArguments(
            f"unknown status {status!r}: use one of {', '.join(STATUSES)}", kind="InvalidStatus"
        )
    if status == "pending":
        return ",".join(f"status.phase!={s.capitalize()}" for s in STATUSES if s != "pending")
    return f"status.phase={status.capitalize()}"


def compare_runs(primary: ExecutionInfo, shadow: ExecutionInfo) -> dict[str, Any]:
    """The JSON of `executions diff`: both runs, whether they agree, the result diff."""
    from kitaru.core.shadow import RunOutcome, agree, result_diff, result_digest

    def side(info: ExecutionInfo) -> dict[str, Any]:
        return {
            "exec_id": info.exec_id,
            "version": info.resolved_version,
            "status": info.status,
            "duration_seconds": duration_seconds(info.started, info.finished_at),
            "result": info.result,
            "message": info.message,
        }

    def outcome(info: ExecutionInfo) -> RunOutcome:
        return RunOutcome(info.status.capitalize(), result_digest(info.result))

    finished = primary.finished and shadow.finished
    return {
        "primary": side(primary),
        "shadow": side(shadow),
        "finished": finished,
        "agree": agree(outcome(primary), outcome(shadow)) if finished else None,
        "result_diff": result_diff(primary.result, shadow.result) if finished else [],
    }


def duration_seconds(started: str | None, finished: str | None) -> float | None:
    from datetime import datetime

    if not started or not finished:
        return None
    start, end = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (started, finished))
    return (end - start).total_seconds()


def _age_key(info: ExecutionInfo) -> tuple[str, str]:
    return (info.created or "", info.exec_id)


class Executions:
    """Executions (FlowInvocations) in the connection's project."""

    def __init__(self, client: KitaruClient) -> None:
        self._client = client

    def _get(self, exec_id: str) -> dict[str, Any]:
        try:
            validate_execution_id(exec_id)
        except InvalidName as exc:
            raise InvalidArguments(str(exc), kind="InvalidName") from exc
        obj = self._client.kube.get(INVOCATIONS, exec_id)
        if obj is None:
            raise NotFound(f"execution {exec_id!r} not found", kind="ExecutionNotFound")
        return obj

    def handle(self, exec_id: str) -> ExecutionHandle:
        """A handle on an existing execution."""
        info = self.get(exec_id)
        return ExecutionHandle(self, exec_id, info.flow, info.resolved_version or info.version)

    def get(self, exec_id: str) -> ExecutionInfo:
        return execution_info(self._get(exec_id))

    def resolution(self, exec_id: str) -> dict[str, Any]:
        """The frozen resolution chain (tag → version → deployment → image → source
        sha256 → inputs hash); empty until the operator has resolved the execution."""
        resolved: dict[str, Any] = (self._get(exec_id).get("status") or {}).get("resolved") or {}
        return resolved

    def latest(self, flow: str, version: int) -> ExecutionInfo | None:
        """The newest execution of `flow` that ran `version`."""
        found = self.list(flow, limit=1, selector=f"status.resolved.version={version}")
        return found[0] if found else None

    def list(
        self,
        flow: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        *,
        selector: str = "",
    ) -> builtins.list[ExecutionInfo]:
        """Executions (of one flow, in one status, or all), newest first; at most `limit`.

        Flow and status are selected by the API server (selectable fields) and read page
        by page; only the newest `limit` are kept in memory meanwhile.
        """
        selectors = [selector] if selector else []
        if flow is not None:
            try:
                validate_flow(flow)
            except InvalidName as exc:
                raise InvalidArguments(str(exc), kind="InvalidName") from exc
            selectors.append(f"spec.flow={flow}")
        if status is not None:
            selectors.append(phase_selector(status))
        objects = self._client.kube.items(INVOCATIONS, field_selector=",".join(selectors))
        infos = (execution_info(o) for o in objects)
        newest = (
            heapq.nlargest(limit, infos, key=_age_key)
            if limit is not None
            else sorted(infos, key=_age_key, reverse=True)
        )
        return newest

    def wait(self, exec_id: str, timeout: float | None = None) -> ExecutionInfo:
        """Watch the execution until it finishes; ExecutionTimeout after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            obj = self._get(exec_id)
            info = execution_info(obj)
            if info.finished:
                return info
            remaining = WATCH_CHUNK_SECONDS if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise ExecutionTimeout(
                    f"execution {exec_id} is still {info.status} after {timeout:g}s"
                )
            try:
                for event in self._client.kube.watch(
                    INVOCATIONS,
                    exec_id,
                    obj["metadata"]["resourceVersion"],
                    int(min(remaining, WATCH_CHUNK_SECONDS)) + 1,
                ):
                    if event.get("type") == "ERROR":
                        break  # e.g. an expired resourceVersion: read the object again
                    if event.get("type") == "DELETED":
                        raise NotFound(
                            f"execution {exec_id!r} was deleted", kind="ExecutionNotFound"
                        )
                    info = execution_info(event["object"])
                    if info.finished:
                        return info
            except Expired:
                continue

    def diff(self, exec_id: str) -> dict[str, Any]:
        """An execution beside its shadow run: status, duration and result of each, and a
        diff of the results. `exec_id` may name either of the two."""
        obj = self._get(exec_id)
        primary = execution_info(obj)
        if primary.shadow_of:  # asked about the shadow: compare it with what it mirrors
            primary = execution_info(self._get(primary.shadow_of))
        if not primary.shadow:
            raise NotFound(
                f"execution {exec_id!r} has no shadow run: its route had no shadow when it "
                "was resolved, or it fell outside the mirrored fraction "
                "(kitaru flow shadow FLOW TAG --version N --fraction F)",
                kind="NoShadowRun",
            )
        shadow_obj = self._client.kube.get(INVOCATIONS, primary.shadow)
        if shadow_obj is None:
            raise NotFound(
                f"the shadow run {primary.shadow!r} of execution {primary.exec_id!r} does not "
                "exist: it was refused when it was started, or deleted since",
                kind="ExecutionNotFound",
            )
        return compare_runs(primary, execution_info(shadow_obj))

    def cancel(self, exec_id: str) -> ExecutionInfo:
        """Request cancellation: the operator deletes the run's Job and marks it Cancelled."""
        self._get(exec_id)
        return execution_info(
            self._client.kube.patch(INVOCATIONS, exec_id, {"spec": {"cancelRequested": True}})
        )

    def logs(self, exec_id: str) -> str:
        """The log output of the execution's pods (every attempt, oldest first)."""
        self._get(exec_id)
        kube = self._client.kube
        pods = kube.pods(f"{LABEL_INVOCATION}={exec_id}")
        pods.sort(key=lambda p: (str(p.metadata.creation_timestamp), p.metadata.name))
        if len(pods) == 1:
            return kube.pod_log(pods[0].metadata.name)
        return "".join(f"==> {p.metadata.name} <==\n{kube.pod_log(p.metadata.name)}" for p in pods)
