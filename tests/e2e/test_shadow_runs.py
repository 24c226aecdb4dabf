"""Shadow runs on the real node (issue 15 item 4): a route mirrors its invocations to a
candidate version; the shadow run gets the same inputs, its result is kept beside the
primary's and never returned to the caller; `executions diff` compares a pair on every
surface, and the route's status sums up the agreement."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
from cli_support import RESEARCH_FLOW, mcp_session, new_project
from kitaru.client import KitaruClient
from kitaru.client.connection import resolve_connection
from support import get, kubectl, wait_for

FLOW = "research_agent"
# The candidate: the same answers, except for one topic.
CANDIDATE = RESEARCH_FLOW.replace(
    'return f"notes on {topic}"',
    'return "no notes" if topic == "hard" else f"notes on {topic}"',
)


def test_shadow_runs_mirror_a_route_and_are_compared(
    running_operator: object, namespace: str, tmp_path: Path
) -> None:
    kitaru = new_project(tmp_path, namespace)
    kitaru(f"deploy flows/research.py:{FLOW} --tag stable --exclusive")
    (kitaru.project / "flows" / "candidate.py").write_text(CANDIDATE)
    kitaru(f"build flows/candidate.py:{FLOW}")  # v2, untagged

    text = kitaru(f"flow shadow {FLOW} stable --version 2 --fraction 1").out
    assert text.strip() == f"Mirroring 1 of {FLOW} stable's invocations to v2"

    runs = {}
    for topic in ("easy", "hard", "also easy"):
        run = kitaru(
            f'invoke {FLOW} --tag stable --input \'{{"topic": "{topic}"}}\' --wait '
            "--timeout 120 -o json"
        ).json()["item"]
        # The caller gets the primary's answer, never the shadow's.
        assert (run["status"], run["version"], run["result"]) == (
            "completed",
            1,
            f"notes on {topic}",
        )
        runs[topic] = run["exec_id"]

    def compared(exec_id: str) -> dict[str, Any] | None:
        diff = kitaru(f"executions diff {exec_id} -o json").json()["item"]
        return diff if diff["finished"] else None

    hard = wait_for(lambda: compared(runs["hard"]), timeout=120, message="the hard pair finished")
    assert (hard["primary"]["version"], hard["shadow"]["version"]) == (1, 2)
    assert hard["shadow"]["exec_id"] == f"{runs['hard']}-shadow"
    assert hard["agree"] is False
    assert '-"notes on hard"' in hard["result_diff"] and '+"no notes"' in hard["result_diff"]
    easy = wait_for(lambda: compared(runs["easy"]), timeout=120, message="the easy pair")
    assert easy["agree"] is True and easy["result_diff"] == []
    shown = kitaru(f"executions diff {runs['easy']}").out
    assert "they agree: the same outcome and the same result" in shown
    # The shadow run is an execution of its own, named after its primary.
    shadow = kitaru(f"executions get {runs['hard']}-shadow -o json").json()["item"]
    assert (shadow["shadow_of"], shadow["result"]) == (runs["hard"], "no notes")
    primary = kitaru(f"executions get {runs['hard']} -o json").json()["item"]
    assert primary["shadow"] == f"{runs['hard']}-shadow"
    listed = kubectl(
        "get", "finv", "-l", f"kitaru.dev/shadow-of={runs['hard']}", "-o", "name",
        namespace=namespace,
    ).stdout.split()  # fmt: skip
    assert listed == [f"flowinvocation.kitaru.dev/{runs['hard']}-shadow"]

    wait_for(lambda: compared(runs["also easy"]), timeout=120, message="the third pair")
    summary = wait_for(
        lambda: (
            s
            if (s := (get("froute", "research-agent.stable", namespace) or {})
                .get("status", {}).get("shadow", {})).get("compared") == 3
            else None
        ),
        timeout=60,
        message="the route sums up three pairs",
    )  # fmt: skip
    assert summary == {"version": 2, "compared": 3, "agreed": 2, "agreementRate": 0.6667}
    assert "v2 100% (agree 2/3)" in kitaru(f"flow show {FLOW}").out

    # SDK and MCP: the same comparison; then the shadow is turned off.
    client = KitaruClient(resolve_connection({**os.environ, **kitaru.env}))
    assert client.executions.diff(runs["hard"])["agree"] is False

    async def mcp() -> dict[str, Any]:
        async with mcp_session(kitaru.project, kitaru.env) as session:
            result = await session.call_tool("kitaru_executions_diff", {"exec_id": runs["easy"]})
            assert not result.is_error, result
            off = await session.call_tool(
                "kitaru_deployments_shadow", {"flow": FLOW, "tag": "stable", "off": True}
            )
            assert not off.is_error, off
            return json.loads("".join(getattr(c, "text", "") for c in result.content))

    assert anyio.run(mcp)["agree"] is True
    route = get("froute", "research-agent.stable", namespace) or {}
    assert "shadow" not in route.get("spec", {})
    run = kitaru(
        f'invoke {FLOW} --tag stable --input \'{{"topic": "x"}}\' --wait --timeout 120 -o json'
    ).json()["item"]
    absent = kitaru(f"executions diff {run['exec_id']} -o json", check=False)
    assert absent.code == 1
    assert absent.json()["error"]["type"] == "NoShadowRun"
