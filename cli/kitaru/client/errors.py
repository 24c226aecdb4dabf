"""Errors of the client layer: one base class, clear messages, a stable `kind`.

The CLI prints `str(error)` and `error.kind`; the MCP server turns them into tool
errors. Core errors (route resolution, inputs, names) are wrapped with their
message unchanged, and their class name as the kind (e.g. `TagNotFound`).
"""

from __future__ import annotations


class KitaruError(Exception):
    """Base of every error a user of the CLI, SDK or MCP server can act on."""

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind or type(self).__name__


class KitaruConnectionError(KitaruError):
    """No usable connection: a missing setting, or the server cannot be reached."""


class AuthenticationError(KitaruError):
    """The API server rejected the credentials."""


class NotFound(KitaruError):
    """The named object does not exist."""


class Rejected(KitaruError):
    """The API server refused a change (CEL rule, admission policy, RBAC)."""


class PoliciesStarting(Rejected):
    """An admission policy could not evaluate yet: for some seconds after the CRDs are
    installed, the API server has not resolved the policies' parameter kinds and refuses
    every request they match. The client tries again for a while before raising it."""


class IncompatibleSchema(KitaruError):
    """A tag move to a version that would reject inputs its current target accepts
    (refused unless forced); `incompatibilities` lists each finding."""

    def __init__(self, message: str, incompatibilities: list[str]) -> None:
        super().__init__(message)
        self.incompatibilities = incompatibilities


class Conflict(KitaruError):
    """A concurrent change won every retry."""


class InvalidArguments(KitaruError):
    """The request itself is wrong (bad inputs, names, selectors)."""


class ResolutionFailed(KitaruError):
    """A flow + tag/version selector did not resolve to exactly one version."""


class ExecutionFailed(KitaruError):
    """An execution finished without a result (failed or cancelled)."""

    def __init__(self, exec_id: str, phase: str, message: str) -> None:
        super().__init__(f"execution {exec_id} {phase.lower()}: {message}")
        self.exec_id = exec_id
        self.phase = phase
        self.failure_message = message


class ExecutionTimeout(KitaruError):
    """wait() gave up before the execution finished."""
