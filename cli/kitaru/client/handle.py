"""`ExecutionHandle`: what invoking a flow returns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kitaru.client.errors import ExecutionFailed, KitaruError
from kitaru.client.records import ExecutionInfo

if TYPE_CHECKING:
    from kitaru.client.executions import Executions


def outcome(info: ExecutionInfo) -> Any:
    """The result of a finished execution, or ExecutionFailed carrying its message."""
    if info.status == "completed":
        return info.result
    if info.finished:
        raise ExecutionFailed(info.exec_id, info.status, info.message or info.reason or "")
    raise KitaruError(
        f"execution {info.exec_id} is still {info.status}; use wait() for its result",
        kind="ExecutionNotFinished",
    )


class ExecutionHandle:
    """One execution of a deployed flow (a FlowInvocation), by its id."""

    def __init__(
        self,
        executions: Executions,
        exec_id: str,
        flow: str | None = None,
        version: int | None = None,
        *,
        idempotency_key: str | None = None,
        existing: bool = False,
    ) -> None:
        self._executions = executions
        self.exec_id = exec_id
        self.flow = flow
        #: The version the selector resolved to when the execution was requested.
        self.version = version
        self.idempotency_key = idempotency_key
        #: True when the idempotency key had already started this execution.
        self.existing = existing

    def __repr__(self) -> str:
        return (
            f"ExecutionHandle(exec_id={self.exec_id!r}, flow={self.flow!r}, version={self.version})"
        )

    def info(self) -> ExecutionInfo:
        return self._executions.get(self.exec_id)

    @property
    def status(self) -> str:
        """pending, running, completed, failed or cancelled."""
        return self.info().status

    @property
    def result(self) -> Any:
        """The result of the finished execution (raises if it failed or is still running)."""
        return outcome(self.info())

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the execution finishes; its result, or ExecutionFailed with the message."""
        return outcome(self._executions.wait(self.exec_id, timeout=timeout))

    def cancel(self) -> ExecutionInfo:
        return self._executions.cancel(self.exec_id)

    def logs(self) -> str:
        return self._executions.logs(self.exec_id)

    def to_json(self) -> dict[str, Any]:
        item = {"exec_id": self.exec_id, "flow": self.flow, "version": self.version}
        if self.idempotency_key is not None:
            item |= {"idempotency_key": self.idempotency_key, "existing": self.existing}
        return item
