"""Gated promotion end to end (issue 14 item 4's acceptance): real runs of the canary on
the node. A promotion fires when the canary has 20 successful runs, and one does not
when its runs have failures; the move is in `kitaru flow history` with the numbers."""

from __future__ import annotations

from pathlib import Path

from cli_support import Kitaru, new_project
from support import wait_for

FLOW_SOURCE = """from kitaru import flow


@flow
def research_agent(topic: str, fail: bool = False) -> str:
    if fail:
        raise RuntimeError(f"asked to fail on {topic}")
    return f"notes on {topic}"
"""


def run_canary(kitaru: Kitaru, completed: int, failed: int) -> None:
    """Invoke the canary route `completed + failed` times (the last `failed` asked to fail)
    and wait for every run to finish."""
    kitaru.python(
        "from kitaru import KitaruClient\n"
        "client = KitaruClient()\n"
        "handles = [client.deployments.invoke('research_agent', tag='canary',\n"
        "           inputs={'topic': f'run {i}', 'fail': i >= "
        f"{completed}}}) for i in range({completed + failed})]\n"
        "phases = [client.executions.wait(h.exec_id, timeout=300).status for h in handles]\n"
        f"assert phases.count('completed') == {completed}, phases\n",
        timeout=900,
    )


def decided(kitaru: Kitaru, name: str) -> dict:
    def check() -> dict | None:
        items = kitaru("flow promotions research_agent -o json").json()["items"]
        (item,) = [p for p in items if p["name"] == name]
        return item if item["phase"] not in (None, "Waiting") else None

    return wait_for(check, timeout=120, message=f"promotion {name} decided")


def stable(kitaru: Kitaru) -> list[int]:
    routes = kitaru("flow show research_agent -o json").json()["item"]["routes"]
    return next(r["versions"] for r in routes if r["tag"] == "stable")


# Every version takes the same deploy-time topic: the candidate must not break stable's
# callers (the promotion would be refused as IncompatibleSchema).
DEPLOY = """deploy flows/research.py:research_agent --input '{"topic": "a"}'"""


def test_twenty_successes_promote_and_failures_do_not(
    running_operator: object, namespace: str, tmp_path: Path
) -> None:
    kitaru = new_project(tmp_path, namespace, FLOW_SOURCE)
    kitaru(DEPLOY)
    kitaru("flow tag research_agent stable --version 1 --exclusive")
    kitaru(DEPLOY + " --tag canary --exclusive")

    first = kitaru(
        "flow promote research_agent --from canary --to stable --min-runs 20 "
        "--min-success 0.95 --after 5s -o json"
    ).json()["item"]
    run_canary(kitaru, completed=20, failed=0)
    promoted = decided(kitaru, first["name"])
    assert (promoted["phase"], promoted["candidate_version"]) == ("Promoted", 2), promoted
    assert (promoted["runs"], promoted["succeeded"], promoted["failed"]) == (20, 20, 0)
    assert stable(kitaru) == [2]
    moves = kitaru("flow history research_agent stable -o json").json()["items"]
    assert moves[-1]["toVersions"] == [2] and moves[-1]["reason"].startswith(
        f"promotion {first['name']}: 20 runs, 20 completed, 0 failed"
    )

    kitaru(DEPLOY + " --tag canary --exclusive")
    second = kitaru(
        "flow promote research_agent --from canary --to stable --min-runs 10 "
        "--min-success 0.9 -o json"
    ).json()["item"]
    run_canary(kitaru, completed=7, failed=3)
    refused = decided(kitaru, second["name"])
    assert (refused["phase"], refused["phase_reason"]) == ("NotPromoted", "GateFailed"), refused
    assert refused["message"].startswith("success 0.70 < 0.90 after 10 runs of version 3")
    assert stable(kitaru) == [2]
