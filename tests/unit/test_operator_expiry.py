"""The operator's expiring tags without a cluster: one timer per expiring route, a
compare-and-swap delete when due (a route changed meanwhile stays), the delete's
attribution, and no timer left once the route is gone or the workers stop."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from kitaru.core.expiry import format_expiry
from kitaru_operator.flow_reconcile import FlowReconciler
from kitaru_operator.flows import Flows, route_record
from kitaru_operator.kube import ROUTE
from kitaru_operator.objects import RouteObject

NS = "project"
FLOW = "research_agent"


class FakeApi:
    """Records deletes; `conflict` answers them as a failed precondition (409)."""

    def __init__(self, conflict: bool = False) -> None:
        self.conflict = conflict
        self.deletes: list[tuple[str, str, str | None]] = []

    async def delete(self, kind: Any, namespace: str, name: str, **kw: Any) -> bool:
        assert kind is ROUTE
        self.deletes.append((namespace, name, kw.get("resource_version")))
        return not self.conflict


def put(
    flows: Flows, tag: str, expires_in: float | None, rv: str = "7", uid: str | None = None
) -> None:
    spec: dict[str, Any] = {"flow": FLOW, "tag": tag, "exclusive": True, "versions": [1]}
    if expires_in is not None:
        spec["expiresAt"] = format_expiry_seconds(time.time() + expires_in)
    obj = {
        "metadata": {"name": f"research-agent.{tag}", "uid": uid or tag, "resourceVersion": rv},
        "spec": spec,
    }
    record = route_record(RouteObject.model_validate(obj))
    assert record is not None
    flows.put_route(NS, record)


def format_expiry_seconds(at: float) -> str:
    return format_expiry(datetime.fromtimestamp(at, UTC))


def reconciler(api: FakeApi) -> tuple[FlowReconciler, Flows]:
    flows = Flows()
    return FlowReconciler(api, flows, events=None), flows  # type: ignore[arg-type]


async def expire(rec: FlowReconciler, flows: Flows, tag: str) -> None:
    state = flows.state(NS, FLOW)
    assert state is not None
    await rec._expire_route(NS, FLOW, state, tag)


def test_a_future_expiry_keeps_one_timer_and_marks_the_route_when_due() -> None:
    async def scenario() -> None:
        api = FakeApi()
        rec, flows = reconciler(api)
        put(flows, "canary", 3600)
        await expire(rec, flows, "canary")
        await expire(rec, flows, "canary")  # a second pass adds no timer
        assert list(rec.expiry_timers) == [(NS, FLOW, "canary")] and api.deletes == []
        rec._expiry_due((NS, FLOW, "canary"))
        assert rec.expiry_timers == {}
        assert "canary" in flows.dirty[(NS, FLOW)].routes

    asyncio.run(scenario())


def test_a_due_route_is_deleted_with_its_resource_version_and_attributed() -> None:
    async def scenario() -> None:
        api = FakeApi()
        rec, flows = reconciler(api)
        put(flows, "canary", -1, rv="42")
        await expire(rec, flows, "canary")
        assert api.deletes == [(NS, "research-agent.canary", "42")]
        state = flows.state(NS, FLOW)
        assert state is not None
        uid, who = state.expired_routes["canary"]
        assert (who.by, who.by_source, who.reason) == ("kitaru-operator", "operator", "expired")
        put(flows, "canary", -1, rv="43")  # a late event of the deleted route itself
        assert state.expired_routes["canary"] == (uid, who)
        put(flows, "canary", None, rv="50", uid="again")  # created again under the tag
        assert "canary" not in state.expired_routes

    asyncio.run(scenario())


def test_a_route_changed_meanwhile_is_not_claimed_as_expired() -> None:
    async def scenario() -> None:
        api = FakeApi(conflict=True)
        rec, flows = reconciler(api)
        put(flows, "canary", -1)
        await expire(rec, flows, "canary")
        assert len(api.deletes) == 1
        assert flows.state(NS, FLOW).expired_routes == {}  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_retagging_without_expiry_or_default_cancels_the_timer() -> None:
    async def scenario() -> None:
        api = FakeApi()
        rec, flows = reconciler(api)
        put(flows, "canary", 3600)
        await expire(rec, flows, "canary")
        (_, timer) = rec.expiry_timers[(NS, FLOW, "canary")]
        put(flows, "canary", None, rv="8")
        await expire(rec, flows, "canary")
        assert rec.expiry_timers == {} and timer.cancelled() and api.deletes == []

    asyncio.run(scenario())


def test_stopping_the_workers_cancels_every_timer() -> None:
    async def scenario() -> None:
        rec, flows = reconciler(FakeApi())
        put(flows, "canary", 3600)
        await expire(rec, flows, "canary")
        (_, timer) = rec.expiry_timers[(NS, FLOW, "canary")]
        while not flows.queue.empty():  # idle workers: only the timer is left to stop
            flows.queue.get_nowait()
        task = asyncio.get_running_loop().create_task(rec.run(workers=1))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert rec.expiry_timers == {} and timer.cancelled()

    asyncio.run(scenario())
