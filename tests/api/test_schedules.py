"""FlowSchedules against the real API server and the operator (a process), written with
kubectl as GitOps would: a tick starts a FlowInvocation of the route, a restart never
starts a tick twice, missed ticks run only the latest (CronJob's rules), suspend and
resume, concurrencyPolicy Forbid and Replace, the failed-runs history limit, and an
unusable cron expression reported on status. There is no node: runs never finish by
themselves here, which is what Forbid and Replace need to see.

The stories run on the operator's schedule clock (`ScheduleClock`, its test seam): a
restart's story on a clock that stands still in the middle of a minute (no minute ends
while it runs, however slow the machine), Forbid and Replace, which need ticks to come,
at four times real time (a cron minute every 15 s). One story of real cron minutes is
kept, on the node: tests/e2e/test_schedule_runs.py."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kitaru import flow
from kitaru.client import KitaruClient
from kitaru.client.connection import combine, load_kube_context
from kitaru.core.schedules import parse_time, run_name
from kitaru_operator.schedules import CLOCK_ENV, ScheduleClock
from support import KUBECONFIG, OperatorProcess, create, deployment, get, kubectl, route, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

FLOW = "research_agent"
PACE = 4  # the fast schedule clock's minute takes 15 real seconds
TICK_TIMEOUT = 60 / PACE + 30  # a per-minute schedule's next tick, plus the operator's reaction


def schedule(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kitaru.dev/v1alpha1",
        "kind": "FlowSchedule",
        "metadata": {"name": name},
        "spec": {"schedule": "* * * * *", "flow": FLOW, **spec},
    }


def runs_of(name: str, namespace: str) -> list[dict[str, Any]]:
    proc = kubectl(
        "get", "finv", "-l", f"kitaru.dev/schedule={name}", "-o", "json", namespace=namespace
    )
    return sorted(json.loads(proc.stdout)["items"], key=lambda r: r["metadata"]["name"])


def stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def set_last_schedule_time(name: str, when: datetime, namespace: str) -> None:
    """What the status would say had the operator last handled a tick at `when`."""
    kubectl(
        "patch", "fsched", name, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"lastScheduleTime": stamp(when)}}), namespace=namespace,
    )  # fmt: skip


def minute(when: datetime) -> datetime:
    return when.replace(second=0, microsecond=0)


def events_of(name: str, namespace: str) -> list[str]:
    proc = kubectl(
        "get", "events", "--field-selector", f"involvedObject.name={name}",
        "-o", "jsonpath={.items[*].reason}", namespace=namespace,
    )  # fmt: skip
    return proc.stdout.split()


@pytest.fixture
def still_clock() -> ScheduleClock:
    """A clock 20 s into the current minute that moves a second per 1 000 real ones."""
    return ScheduleClock(minute(datetime.now(UTC)).timestamp() + 20, 0.001)


@pytest.fixture
def still_operator(namespace: str, tmp_path: Path, still_clock: ScheduleClock) -> Any:
    op = OperatorProcess(namespace, tmp_path, resync_seconds=5, env={CLOCK_ENV: str(still_clock)})
    yield op
    op.stop()
    assert "Traceback" not in op.log(), op.log()


@pytest.fixture
def fast_clock() -> ScheduleClock:
    """The clock a fast operator's schedules tick by, from now on at PACE times real time."""
    return ScheduleClock(time.time(), PACE)


@pytest.fixture
def fast_operator(namespace: str, tmp_path: Path, fast_clock: ScheduleClock) -> Any:
    op = OperatorProcess(namespace, tmp_path, resync_seconds=5, env={CLOCK_ENV: str(fast_clock)})
    yield op
    op.stop()
    assert "Traceback" not in op.log(), op.log()


def test_missed_ticks_run_once_and_a_restart_never_starts_a_tick_twice(
    still_operator: OperatorProcess, still_clock: ScheduleClock, namespace: str
) -> None:
    operator = still_operator
    create(deployment(FLOW, 1), namespace)
    create(schedule("nightly", inputs={"topic": "cron"}), namespace)
    now = still_clock()
    # The operator was down for ten minutes: only the latest missed tick runs.
    set_last_schedule_time("nightly", now - timedelta(minutes=10), namespace)
    operator.start()
    runs = wait_for(lambda: runs_of("nightly", namespace), timeout=30, message="a run")
    tick = minute(now)
    assert [r["metadata"]["name"] for r in runs] == [run_name("nightly", tick)]
    run = runs[0]
    assert run["spec"] == {"flow": FLOW, "inputs": {"topic": "cron"}, "cancelRequested": False}
    assert run["metadata"]["annotations"]["kitaru.dev/scheduled-at"] == tick.strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    owner = run["metadata"]["ownerReferences"][0]
    sched = get("fsched", "nightly", namespace)
    assert sched is not None
    assert (owner["kind"], owner["uid"]) == ("FlowSchedule", sched["metadata"]["uid"])
    # It resolves through the normal path: the default route the operator bootstrapped.
    resolved = wait_for(
        lambda: (
            (get("finv", run["metadata"]["name"], namespace) or {})
            .get("status", {})
            .get("resolved")
        ),
        timeout=30,
        message="the run resolved",
    )
    assert (resolved["selector"], resolved["version"]) == ("default", 1)
    status = (
        wait_for(
            lambda: (get("fsched", "nightly", namespace) or {}).get("status", {}).get("active"),
            message="status written",
        )
        and get("fsched", "nightly", namespace)["status"]
    )  # type: ignore[index]
    assert status["lastScheduleTime"] == tick.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert status["nextScheduleTime"] == (tick + timedelta(minutes=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert status["target"] == "default"
    assert status["active"] == [run_name("nightly", tick)]
    assert "Started" in events_of("nightly", namespace)

    # Killed before the tick was recorded: the restart finds the run and starts no other.
    operator.kill()
    set_last_schedule_time("nightly", now - timedelta(minutes=10), namespace)
    operator.start()
    wait_for(
        lambda: "exists already" in operator.log(), timeout=30, message="the tick seen as started"
    )
    assert minute(still_clock()) == tick  # the schedules' clock stood still: the same tick
    assert [r["metadata"]["name"] for r in runs_of("nightly", namespace)] == [
        run_name("nightly", tick)
    ]
    # Deleting the schedule deletes its runs (owner references).
    kubectl("delete", "fsched", "nightly", namespace=namespace)
    wait_for(lambda: not runs_of("nightly", namespace), timeout=60, message="runs collected")


def test_suspend_forbid_and_replace(
    fast_operator: OperatorProcess, fast_clock: ScheduleClock, namespace: str
) -> None:
    # Runs must stay unfinished across a tick, also where a node would run them: a quota
    # that admits no pod keeps each run Pending.
    create(
        {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"},
         "spec": {"hard": {"pods": "0"}}},
        namespace,
    )  # fmt: skip
    create(deployment(FLOW, 1), namespace)
    fast_operator.start()
    create(
        schedule(
            "every-minute", suspend=True, concurrencyPolicy="Forbid", failedRunsHistoryLimit=0
        ),
        namespace,
    )
    suspended = wait_for(
        lambda: (get("fsched", "every-minute", namespace) or {}).get("status", {}).get("target"),
        message="status of the suspended schedule",
    ) and get("fsched", "every-minute", namespace)
    assert suspended is not None
    assert "nextScheduleTime" not in suspended["status"]
    assert suspended["status"]["conditions"][0]["reason"] == "Suspended"
    # Resumed after ticks were missed while suspended: the latest runs at once (and only
    # it: the minutes before it were missed too).
    resumed = fast_clock()
    set_last_schedule_time("every-minute", resumed - timedelta(minutes=3), namespace)
    kubectl(
        "patch", "fsched", "every-minute", "--type=merge", "-p", '{"spec":{"suspend":false}}',
        namespace=namespace,
    )  # fmt: skip
    (run,) = wait_for(
        lambda: runs_of("every-minute", namespace), timeout=30, message="the tick on resume"
    )
    tick = parse_time(run["metadata"]["annotations"]["kitaru.dev/scheduled-at"])
    assert tick is not None and minute(resumed) <= tick <= minute(fast_clock())
    first = run["metadata"]["name"]
    assert first == run_name("every-minute", tick)
    # Forbid: the next tick comes while the first run is unfinished: skipped.
    wait_for(
        lambda: "SkippedTick" in events_of("every-minute", namespace),
        timeout=TICK_TIMEOUT,
        message="the next tick skipped",
    )
    assert [r["metadata"]["name"] for r in runs_of("every-minute", namespace)] == [first]
    status = get("fsched", "every-minute", namespace)["status"]  # type: ignore[index]
    assert status["lastScheduleTime"] > stamp(tick)
    assert status["active"] == [first]

    # Replace: the next tick cancels the unfinished run, then starts its own; the
    # cancelled run is pruned at once (failedRunsHistoryLimit 0).
    kubectl(
        "patch", "fsched", "every-minute", "--type=merge",
        "-p", '{"spec":{"concurrencyPolicy":"Replace"}}', namespace=namespace,
    )  # fmt: skip

    def replaced() -> list[str] | None:
        names = [r["metadata"]["name"] for r in runs_of("every-minute", namespace)]
        return names if names and first not in names else None

    names = wait_for(replaced, timeout=TICK_TIMEOUT + 30, message="the run replaced")
    assert len(names) == 1
    assert "Replaced" in events_of("every-minute", namespace)

    def active_is_the_one_run() -> bool:
        # Ticks keep coming (each replaces the last run): compare with the run there is.
        (current,) = (r["metadata"]["name"] for r in runs_of("every-minute", namespace))
        active = (get("fsched", "every-minute", namespace) or {})["status"]["active"]
        return bool(active == [current] and current != first)

    wait_for(active_is_the_one_run, message="active is the new run")


def test_an_unusable_schedule_is_reported_on_status(running_operator: Any, namespace: str) -> None:
    create(schedule("broken", schedule="61 * * * *"), namespace)

    def ready() -> dict[str, Any] | None:
        conditions = (
            (get("fsched", "broken", namespace) or {}).get("status", {}).get("conditions", [])
        )
        return next((c for c in conditions if c["type"] == "Ready"), None)

    condition = wait_for(ready, message="Ready written")
    assert (condition["status"], condition["reason"]) == ("False", "InvalidSchedule")
    assert "minute 61 is out of range 0-59" in condition["message"]
    kubectl(
        "patch", "fsched", "broken", "--type=merge", "-p", '{"spec":{"timeZone":"Mars/Olympus",'
        '"schedule":"@daily"}}', namespace=namespace,
    )  # fmt: skip
    wait_for(
        lambda: (ready() or {}).get("reason") == "UnknownTimeZone", message="time zone reported"
    )
    assert not runs_of("broken", namespace)


def test_the_sdk_schedules_a_flow_and_manages_it(namespace: str) -> None:
    """`flow.schedule(...)` and `KitaruClient().schedules` write what kubectl reads."""
    create(deployment(FLOW, 1), namespace)
    create(route(FLOW, "default", 1, annotations={"kitaru.dev/highest-version": "1"}), namespace)
    env = {"KUBECONFIG": str(KUBECONFIG), "KITARU_PROJECT": namespace}
    client = KitaruClient(combine(env, None, load_kube_context(env)))

    @flow(name=FLOW)
    def research_agent(topic: str) -> str:
        return topic

    info = research_agent.schedule(
        "weekly-digest",
        "0 9 * * mon",
        time_zone="America/New_York",
        version=1,
        failed_runs_history_limit=0,
        client=client,
        topic="digest",
    )
    assert (info.target, info.inputs, info.failed_runs_history_limit) == (
        "version 1", {"topic": "digest"}, 0,
    )  # fmt: skip
    spec = get("fsched", "weekly-digest", namespace)["spec"]  # type: ignore[index]
    assert spec["schedule"] == "0 9 * * mon" and spec["timeZone"] == "America/New_York"
    assert [s.name for s in client.schedules.list(FLOW)] == ["weekly-digest"]
    assert client.schedules.list("other_flow") == []
    assert client.schedules.pause("weekly-digest").suspended
    assert get("fsched", "weekly-digest", namespace)["spec"]["suspend"] is True  # type: ignore[index]
    assert not client.schedules.resume("weekly-digest").suspended
    assert client.schedules.delete("weekly-digest").name == "weekly-digest"
    assert get("fsched", "weekly-digest", namespace) is None
