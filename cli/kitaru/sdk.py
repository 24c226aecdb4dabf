"""The Python SDK: `@flow`, and deploying and invoking a flow from its own object.

    from kitaru import flow

    @flow
    def research_agent(topic: str) -> str:
        ...

    research_agent("local call")                      # still a plain function
    research_agent.deploy(topic="durable execution")  # next version, tag 'default'
    handle = research_agent.invoke(topic="serverless routing")
    result = handle.wait()
    research_agent.schedule("nightly", "0 3 * * *", time_zone="Europe/Berlin", topic="news")

Nothing here imports the Kubernetes client until a method talks to the server.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

if TYPE_CHECKING:
    from kitaru.client import (
        DeploymentInfo,
        ExecutionHandle,
        KitaruClient,
        RouteInfo,
        ScheduleInfo,
    )
    from kitaru.core.retention import Retention

P = ParamSpec("P")
R = TypeVar("R")


def _client(client: KitaruClient | None) -> KitaruClient:
    if client is not None:
        return client
    from kitaru.client import KitaruClient

    return KitaruClient()


class Deployment:
    """One deployment version of a flow; `invoke()` always runs exactly this version."""

    def __init__(self, flow: str, version: int, client: KitaruClient | None = None) -> None:
        self.flow = flow
        self.version = version
        self._client = client

    def __repr__(self) -> str:
        return f"Deployment(flow={self.flow!r}, version={self.version})"

    def info(self) -> DeploymentInfo:
        """The deployment as stored (tags, inputs, snapshot)."""
        return _client(self._client).deployments.get(self.flow, version=self.version)

    def invoke(self, *, idempotency_key: str | None = None, **inputs: Any) -> ExecutionHandle:
        """Start an execution of this version; inputs override the deploy-time values.
        With `idempotency_key`, a repeat of the same request returns the same execution."""
        return _client(self._client).deployments.invoke(
            self.flow, version=self.version, inputs=inputs, idempotency_key=idempotency_key
        )


class Flow(Generic[P, R]):
    """A durable flow: callable like the function it wraps, deployable and invocable."""

    def __init__(self, func: Callable[P, R], name: str | None = None) -> None:
        self.func = func
        self.name = name or func.__name__
        functools.update_wrapper(self, func)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Flow({self.name!r})"

    def deploy(
        self,
        *,
        tag: str | None = None,
        exclusive: bool = False,
        image: str | None = None,
        retention: Retention | None = None,
        force: bool = False,
        max_concurrency: int | None = None,
        client: KitaruClient | None = None,
        **inputs: Any,
    ) -> DeploymentInfo:
        """Deploy this flow from its source file as the next version, with one tag.

        Keyword arguments other than the options are representative deploy-time
        inputs. No `tag` means `default`; `image` runs a prebuilt image instead of
        the stack's runner image; `retention` says how long this version's finished
        runs are kept (default: the operator's). A version whose inputs would break the
        tag's callers is refused (IncompatibleSchema) unless `force=True`.
        `max_concurrency` limits the runs through the tag active at once.
        """
        return _client(client).deployments.deploy(
            self,
            inputs=inputs,
            tag=tag,
            exclusive=exclusive,
            image=image,
            retention=retention,
            force=force,
            max_concurrency=max_concurrency,
        )

    def limit(
        self,
        max_concurrency: int | None,
        *,
        tag: str | None = None,
        client: KitaruClient | None = None,
    ) -> RouteInfo:
        """At most `max_concurrency` runs of this flow (of its `tag`) active at once;
        more wait, Queued, first-in first-out. None clears the limit."""
        return _client(client).deployments.limit(self.name, max_concurrency, tag=tag)

    def invoke(
        self,
        *,
        tag: str | None = None,
        version: int | None = None,
        retention: Retention | None = None,
        routing_key: str | None = None,
        idempotency_key: str | None = None,
        client: KitaruClient | None = None,
        **inputs: Any,
    ) -> ExecutionHandle:
        """Start a remote execution of the deployed flow by tag or version (neither ⇒
        default); `retention` says how long it is kept once finished. On a split tag,
        executions with the same `routing_key` run the same version; with
        `idempotency_key`, a repeat of the same request returns the same execution."""
        return _client(client).deployments.invoke(
            self.name,
            tag=tag,
            version=version,
            inputs=inputs,
            retention=retention,
            routing_key=routing_key,
            idempotency_key=idempotency_key,
        )

    def deployment(self, version: int, client: KitaruClient | None = None) -> Deployment:
        """The deployment `version` of this flow, for pinned invocations."""
        return Deployment(self.name, version, client)

    def schedule(
        self,
        name: str,
        cron: str,
        *,
        time_zone: str | None = None,
        tag: str | None = None,
        version: int | None = None,
        concurrency_policy: str = "Allow",
        starting_deadline_seconds: int | None = None,
        successful_runs_history_limit: int = 3,
        failed_runs_history_limit: int = 1,
        suspend: bool = False,
        client: KitaruClient | None = None,
        **inputs: Any,
    ) -> ScheduleInfo:
        """Invoke this flow's route on `cron` in `time_zone` (a FlowSchedule named
        `name`); `KitaruClient().schedules` lists, pauses, resumes and deletes it."""
        return _client(client).schedules.create(
            name,
            self.name,
            cron,
            time_zone=time_zone,
            tag=tag,
            version=version,
            inputs=inputs,
            concurrency_policy=concurrency_policy,
            starting_deadline_seconds=starting_deadline_seconds,
            successful_runs_history_limit=successful_runs_history_limit,
            failed_runs_history_limit=failed_runs_history_limit,
            suspend=suspend,
        )


@overload
def flow(func: Callable[P, R], /) -> Flow[P, R]: ...
@overload
def flow(*, name: str | None = None) -> Callable[[Callable[P, R]], Flow[P, R]]: ...


def flow(
    func: Callable[P, R] | None = None, /, *, name: str | None = None
) -> Flow[P, R] | Callable[[Callable[P, R]], Flow[P, R]]:
    """Mark a function as a Kitaru flow: `@flow` or `@flow(name="other_name")`."""
    if func is not None:
        return Flow(func, name)

    def decorate(f: Callable[P, R]) -> Flow[P, R]:
        return Flow(f, name)

    return decorate
