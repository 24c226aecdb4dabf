"""The operator's promotions without a cluster: counting finished runs by name, which
promotions a run or a flow change wakes, the older waiting promotion first, and one
pass that counts from its LIST, moves the tag compare-and-swap signed by the operator,
and writes the Promoted status."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from kitaru_operator.flows import Flows, route_record
from kitaru_operator.objects import FinishedInvocation, Object, RouteObject
from kitaru_operator.promotions import Count, Promotions, promotion_record
from kitaru_operator.retention import FinishedRun, finished_run

NS = "project"
FLOW = "research_agent"
CREATED = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def invocation(name: str, version: int, phase: str, created: datetime = CREATED) -> dict:
    return {
        "metadata": {"name": name, "namespace": NS, "creationTimestamp": stamp(created)},
        "spec": {"flow": FLOW},
        "status": {
            "phase": phase,
            "completionTime": stamp(created + timedelta(seconds=3)),
            "resolved": {"version": version},
        },
    }


def run(name: str, version: int, phase: str, created: datetime = CREATED) -> FinishedRun:
    parsed = finished_run(
        FinishedInvocation.model_validate(invocation(name, version, phase, created))
    )
    assert parsed is not None
    return parsed


def promotion(name: str, created: datetime = CREATED, status: dict | None = None, **spec: Any):
    body = {
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": name,
            "resourceVersion": "10",
            "generation": 1,
            "creationTimestamp": stamp(created),
        },
        "spec": {"flow": FLOW, "fromTag": "canary", "toTag": "stable", **spec},
        "status": status,
    }
    record = promotion_record(Object.model_validate(body))
    assert record is not None
    return record


def test_a_count_takes_finished_runs_of_the_candidate_since_the_promotion_by_name() -> None:
    count = Count(version=2, since=CREATED.timestamp())
    assert count.add("a", run("a", 2, "Completed"))
    assert not count.add("a", run("a", 2, "Completed"))  # the same run again
    assert count.add("b", run("b", 2, "Failed"))
    assert not count.add("c", run("c", 1, "Completed"))  # another version
    assert not count.add("d", run("d", 2, "Cancelled"))  # not an outcome
    assert not count.add("e", run("e", 2, "Completed", CREATED - timedelta(seconds=1)))
    assert (count.tally().succeeded, count.tally().failed) == (1, 1)


class FakeApi:
    """A LIST of finished runs, route patches and status writes, recorded."""

    def __init__(self, finished: list[dict]) -> None:
        self.finished = finished
        self.selectors: list[str] = []
        self.patches: list[tuple[str, dict]] = []
        self.statuses: list[dict] = []

    async def list_raw(self, kind: Any, namespace: str, **kw: Any) -> bytes:
        self.selectors.append(kw["field_selector"])
        return json.dumps({"metadata": {"resourceVersion": "5"}, "items": self.finished}).encode()

    async def call(self, method: str, path: str, ok: Any = (), body: Any = None) -> Any:
        assert path.endswith("/selfsubjectreviews")
        return 201, {"status": {"userInfo": {"username": "system:serviceaccount:k:operator"}}}

    async def patch(self, kind: Any, namespace: str, name: str, patch: dict) -> dict:
        self.patches.append((name, patch))
        return {}

    async def replace(self, kind: Any, body: dict, subresource: str = "") -> dict:
        assert subresource == "status"
        self.statuses.append(body)
        return body


class FakeEvents:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str]] = []

    def post(self, ref: Any, reason: str, message: str, warning: bool = False) -> None:
        self.posted.append((reason, message))


def routed(flows: Flows, tag: str, version: int, rv: str, generation: int) -> None:
    obj = {
        "metadata": {
            "name": f"research-agent.{tag}",
            "uid": tag,
            "resourceVersion": rv,
            "generation": generation,
        },
        "spec": {"flow": FLOW, "tag": tag, "exclusive": True, "versions": [version]},
    }
    record = route_record(RouteObject.model_validate(obj))
    assert record is not None
    flows.put_route(NS, record)


def test_one_pass_counts_moves_the_tag_signed_and_writes_promoted() -> None:
    finished = [invocation(f"ok-{i}", 2, "Completed") for i in range(20)]
    api, events, flows = FakeApi(finished), FakeEvents(), Flows()
    routed(flows, "canary", 2, rv="31", generation=1)
    routed(flows, "stable", 1, rv="32", generation=4)
    promotions = Promotions(api, flows, events)  # type: ignore[arg-type]
    waiting = {"phase": "Waiting", "candidateVersion": 2}
    promotions.upsert((NS, "p1"), promotion("p1", status=waiting))

    asyncio.run(promotions.reconcile((NS, "p1")))

    assert api.selectors == [
        "spec.flow=research_agent,status.resolved.version=2,"
        "status.phase!=,status.phase!=Pending,status.phase!=Running"
    ]
    ((name, patch),) = api.patches
    assert name == "research-agent.stable"
    assert patch["metadata"]["resourceVersion"] == "32"
    annotations = patch["metadata"]["annotations"]
    assert annotations["kitaru.dev/changed-by"] == "system:serviceaccount:k:operator"
    assert annotations["kitaru.dev/change-generation"] == "5"
    assert annotations["kitaru.dev/reason"] == (
        "promotion p1: 20 runs, 20 completed, 0 failed, success 1.00 >= 0.95"
    )
    assert patch["spec"] == {"exclusive": True, "versions": [2], "expiresAt": None}
    (status,) = api.statuses
    assert status["metadata"]["resourceVersion"] == "10"
    assert status["status"]["phase"] == "Promoted"
    assert status["status"]["previousVersions"] == [1]
    assert events.posted[0][0] == "GateMet"


def test_runs_and_flow_changes_wake_only_waiting_promotions_of_their_flow() -> None:
    promotions = Promotions(None, Flows(), FakeEvents())  # type: ignore[arg-type]
    promotions.upsert((NS, "p1"), promotion("p1"))
    promotions.upsert((NS, "done"), promotion("done", status={"phase": "Promoted"}))
    assert promotions.waiting == {(NS, FLOW): {"p1"}}
    promotions.queued.clear()
    promotions.counts[(NS, "p1")] = Count(version=2, since=CREATED.timestamp())
    promotions.run_finished((NS, "r1"), run("r1", 1, "Completed"))
    assert promotions.queued == set()  # not the candidate: nothing to evaluate
    promotions.run_finished((NS, "r2"), run("r2", 2, "Completed"))
    assert promotions.queued == {(NS, "p1")}
    promotions.queued.clear()
    promotions.flow_changed((NS, "another_flow"))
    assert promotions.queued == set()
    promotions.flow_changed((NS, FLOW))
    assert promotions.queued == {(NS, "p1")}


def test_the_older_waiting_promotion_of_a_tag_goes_first() -> None:
    promotions = Promotions(None, Flows(), FakeEvents())  # type: ignore[arg-type]
    older = promotion("p-old", CREATED - timedelta(minutes=1))
    newer = promotion("p-new", CREATED)
    other_tag = promotion("p-prod", CREATED - timedelta(minutes=2), toTag="prod")
    for record in (older, newer, other_tag):
        promotions.upsert((NS, record.name), record)
    assert promotions._pending_before(NS, newer) == "p-old"
    assert promotions._pending_before(NS, older) is None
    promotions.delete((NS, "p-old"))
    assert promotions._pending_before(NS, newer) is None


def test_a_gate_decided_on_the_first_pass_still_checks_the_candidates_schema() -> None:
    from kitaru.core.manifests import build_deployment
    from kitaru_operator.flows import deployment_record

    api, events, flows = FakeApi([]), FakeEvents(), Flows()
    for version, kind in ((1, "string"), (2, "integer")):
        body = build_deployment(
            FLOW,
            version,
            entrypoint="m:research_agent",
            image="x/y:z",
            input_schema={"type": "object", "properties": {"topic": {"type": kind}}},
        )
        body["metadata"].update(uid=f"v{version}", resourceVersion="1", generation=1)
        record = deployment_record(Object.model_validate(body))
        assert record is not None
        flows.put_deployment(NS, record)
    routed(flows, "canary", 2, rv="31", generation=1)
    routed(flows, "stable", 1, rv="32", generation=1)
    promotions = Promotions(api, flows, events)  # type: ignore[arg-type]
    promotions.upsert((NS, "p1"), promotion("p1", minRuns=0))

    asyncio.run(promotions.reconcile((NS, "p1")))

    assert api.patches == []
    (status,) = api.statuses
    assert status["status"]["reason"] == "IncompatibleSchema"
    assert "input 'topic': type string → integer" in status["status"]["message"]
