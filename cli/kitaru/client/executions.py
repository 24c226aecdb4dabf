"""`KitaruClient().executions`: inspect, wait for, cancel and read the logs of executions."""

from __future__ import annotations

import builtins
import time
from typing import TYPE_CHECKING, Any

from kitaru.client.errors import ExecutionTimeout, NotFound
from kitaru.client.handle import ExecutionHandle
from kitaru.client.kube import Expired
from kitaru.client.records import ExecutionInfo, execution_info
from kitaru.core.names import INVOCATIONS, LABEL_INVOCATION

if TYPE_CHECKING:
    from kitaru.client.client import KitaruClient

WATCH_CHUNK_SECONDS = 60


class Executions:
    """Executions (FlowInvocations) in the connection's project."""

    def __init__(self, client: KitaruClient) -> None:
        self._client = client

    def _get(self, exec_id: str) -> dict[str, Any]:
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

    def list(self, flow: str | None = None) -> builtins.list[ExecutionInfo]:
        """Executions (of one flow, or all), newest first."""
        infos = [execution_info(o) for o in self._client.kube.list(INVOCATIONS)]
        infos = [i for i in infos if flow is None or i.flow == flow]
        return sorted(infos, key=lambda i: (i.created or "", i.exec_id), reverse=True)

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
