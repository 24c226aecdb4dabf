"""The SDK's handle API end to end: the producer deploys from its flow object, invokes it,
waits, reads logs, pins a version, sees failures and cancels."""

from __future__ import annotations

from pathlib import Path

from cli_support import new_project

FLOWS = """import time

from kitaru import flow


@flow
def research_agent(topic: str) -> str:
    print(f"researching {topic}")
    if topic == "fail":
        raise ValueError("no sources for 'fail'")
    if topic == "slow":
        time.sleep(120)
    return f"notes on {topic}"
"""

PRODUCER = """
from flows.research import research_agent
from kitaru import ExecutionFailed

info = research_agent.deploy(topic="durable execution")
print("deployed", info.version, [t.tag for t in info.tags])
research_agent.deploy(topic="durable execution", tag="canary", exclusive=True)

handle = research_agent.invoke(topic="serverless routing")  # uses tag="default"
result = handle.wait(timeout=120)
print("default", handle.version, result, handle.status, handle.result)
assert "researching serverless routing" in handle.logs()

deployment = research_agent.deployment(version=2)
handle = deployment.invoke(topic="pinned run")
print("pinned", handle.version, handle.wait(timeout=120))

failing = research_agent.invoke(topic="fail", tag="canary")
try:
    failing.wait(timeout=120)
except ExecutionFailed as failure:
    print("failed", failure.failure_message)

slow = research_agent.invoke(topic="slow", version=1)
slow.cancel()
try:
    slow.wait(timeout=120)
except ExecutionFailed as failure:
    print("cancelled", failure.phase)
"""


def test_sdk_handle_api(running_operator: object, namespace: str, tmp_path: Path) -> None:
    kitaru = new_project(tmp_path, namespace, FLOWS)
    lines = kitaru.python(PRODUCER, timeout=400).out.splitlines()
    assert lines[0] == "deployed 1 ['default']"
    assert lines[1] == "default 1 notes on serverless routing completed notes on serverless routing"
    assert lines[2] == "pinned 2 notes on pinned run"
    assert lines[3].startswith("failed ") and "no sources for 'fail'" in lines[3]
    assert lines[4] == "cancelled cancelled"
