"""The product page's worked examples, verbatim, through the `kitaru` CLI and the Python
consumer, on the local cluster with the operator running."""

from __future__ import annotations

import json
from pathlib import Path

from cli_support import new_project
from support import kubectl, wait_for

PRODUCER = [
    """kitaru deploy flows/research.py:research_agent \\
  --input '{"topic": "durable agents"}'""",
    """kitaru deploy flows/research.py:research_agent \\
  --tag canary \\
  --exclusive \\
  --input '{"topic": "durable agents"}'""",
    "kitaru flow deployments list research_agent",
    "kitaru flow tag research_agent stable --version 2 --exclusive",
    "kitaru flow tag research_agent benchmark --version 2",
]

CLI_CONSUMER = """kitaru invoke research_agent \\
  --tag stable \\
  --input '{"topic": "deployment routing"}'"""

PYTHON_CONSUMER = """from kitaru import KitaruClient

handle = KitaruClient().deployments.invoke(
    flow="research_agent",
    tag="stable",
    inputs={"topic": "deployment routing"},
)
print(handle.exec_id)
"""


def test_producer_deploys_and_shares_consumer_invokes(
    running_operator: object, namespace: str, tmp_path: Path
) -> None:
    kitaru = new_project(tmp_path, namespace)

    v1 = kitaru(PRODUCER[0])
    assert "Deployed research_agent v1 (kitaru::research_agent::v1)" in v1.out
    assert "default" in v1.out
    v2 = kitaru(PRODUCER[1])
    assert "Deployed research_agent v2" in v2.out
    listing = kitaru(PRODUCER[2]).out.splitlines()
    assert listing[0].split()[:3] == ["FLOW", "VERSION", "TAGS"]
    assert listing[1].split()[:3] == ["research_agent", "1", "default"]
    assert listing[2].split()[:3] == ["research_agent", "2", "canary"]
    assert "stable now routes to v2" in kitaru(PRODUCER[3]).out
    assert "benchmark now routes to v2" in kitaru(PRODUCER[4]).out

    items = kitaru("flow deployments list research_agent -o json").json()["items"]
    tags = {d["version"]: [t["tag"] for t in d["tags"]] for d in items}
    assert tags == {1: ["default"], 2: ["benchmark", "canary", "stable"]}
    # The operator agrees: its derived status shows the same tags (kubectl get fdep).
    wait_for(
        lambda: (
            "stable"
            in kubectl("get", "fdep", "research-agent-v2", "-o", "json", namespace=namespace).stdout
        ),
        timeout=30,
        message="status.tags of v2",
    )

    invoked = kitaru(CLI_CONSUMER)
    exec_id = invoked.out.split()[2]
    assert invoked.out.startswith(f"Started execution {exec_id} (research_agent v2, tag stable)")
    assert kitaru(f"executions wait {exec_id} --timeout 120").out == "notes on deployment routing\n"

    consumer = kitaru.python(PYTHON_CONSUMER)
    consumer_id = consumer.out.strip()
    assert consumer_id.startswith("research-agent-")
    waited = kitaru.python(
        "from kitaru import KitaruClient\n"
        f"print(KitaruClient().executions.handle({consumer_id!r}).wait(timeout=120))\n"
    )
    assert waited.out == "notes on deployment routing\n"
    got = kitaru(f"executions get {consumer_id} -o json").json()["item"]
    assert (got["status"], got["resolved_version"], got["result"]) == (
        "completed",
        2,
        "notes on deployment routing",
    )
    assert "researching deployment routing" in kitaru(f"executions logs {consumer_id}").out


def test_invocation_model_examples(
    running_operator: object, namespace: str, tmp_path: Path
) -> None:
    """`kitaru invoke` with --tag default, with no selector, and pinned with --version."""
    kitaru = new_project(tmp_path, namespace)
    kitaru('deploy flows/research.py:research_agent --input \'{"topic": "durable execution"}\'')
    kitaru("deploy flows/research.py:research_agent --tag canary --exclusive")
    examples = [
        (
            """kitaru invoke research_agent \\
  --tag default \\
  --input '{"topic": "serverless routing"}'""",
            1,
            "serverless routing",
        ),
        (
            """kitaru invoke research_agent --input '{"topic": "default route"}'""",
            1,
            "default route",
        ),
        (
            """kitaru invoke research_agent --version 2 --input '{"topic": "pinned run"}'""",
            2,
            "pinned run",
        ),
    ]
    for command, version, topic in examples:
        result = kitaru(command + " --wait --timeout 120 -o json").json()
        item = result["item"]
        assert (item["version"], item["status"], item["result"]) == (
            version,
            "completed",
            f"notes on {topic}",
        )
    shown = kitaru("flow show research_agent -o json").json()["item"]
    assert {r["tag"]: r["versions"] for r in shown["routes"]} == {"default": [1], "canary": [2]}
    assert json.loads(json.dumps(shown))["flow"] == "research_agent"
