"""What the parts of `KitaruClient().deployments` share: the core's rule violations as
the client's errors, the selector of one flow's objects, and the bound on retries."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from kitaru.client.errors import Conflict, InvalidArguments, NotFound, ResolutionFailed
from kitaru.core.history import HistoryError, HistoryNotCurrent
from kitaru.core.idempotency import IdempotencyKeyReused
from kitaru.core.inputs import InvalidInputs
from kitaru.core.manifests import route_view
from kitaru.core.names import ROUTES, InvalidName
from kitaru.core.queueing import InvalidLimit
from kitaru.core.routing import ResolutionError, RouteView
from kitaru.core.tagging import TagError

if TYPE_CHECKING:
    from kitaru.client.kube import Kube


def of_flow(flow: str) -> str:
    """The field selector of one flow's objects (a selectable field of every kind)."""
    return f"spec.flow={flow}"


def route_views(kube: Kube, flow: str | None = None) -> builtins.list[RouteView]:
    """The routes of `flow` (or of every flow), as the core sees them."""
    objects = kube.list(ROUTES, field_selector=of_flow(flow) if flow else "")
    return [view for obj in objects if (view := route_view(obj)) is not None]


@contextmanager
def core_errors() -> Iterator[None]:
    """Core rule violations as KitaruErrors, messages unchanged."""
    try:
        yield
    except ResolutionError as exc:
        raise ResolutionFailed(exc.message, kind=exc.reason) from exc
    except InvalidInputs as exc:
        raise InvalidArguments(exc.message, kind="InvalidInputs") from exc
    except InvalidName as exc:  # InvalidVersion too
        raise InvalidArguments(str(exc), kind=type(exc).__name__) from exc
    except TagError as exc:
        raise InvalidArguments(str(exc), kind=exc.reason) from exc
    except HistoryNotCurrent as exc:
        raise Conflict(str(exc), kind=exc.reason) from exc
    except HistoryError as exc:
        raise InvalidArguments(str(exc), kind=exc.reason) from exc
    except InvalidLimit as exc:
        raise InvalidArguments(str(exc), kind="InvalidLimit") from exc
    except IdempotencyKeyReused as exc:
        raise InvalidArguments(exc.message, kind="IdempotencyKeyReused") from exc


def not_found(error: ResolutionError) -> NotFound:
    """A core "no such thing" as the client's NotFound, message and kind unchanged."""
    return NotFound(error.message, kind=error.reason)
