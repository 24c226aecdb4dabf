"""Work proportional to change: among 250 versions, one change writes only what it
touches, and posts an Event only for a real change. (A write per version would show
here as 250 writes instead of 2; how the operator holds up at 10 000 versions is
bench/bench_scale.py's claim, measured there.)"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kitaru.core.manifests import build_deployment
from support import kubectl, route, wait_for

RUNNER = "ghcr.io/kitaru-k8s/runner:dev"

pytestmark = pytest.mark.usefixtures("crds_installed")
VERSIONS = 250


def deployment(version: int) -> dict[str, Any]:
    return build_deployment("wide", version, entrypoint="m:f", image=RUNNER)


def create(namespace: str, *objects: dict[str, Any]) -> None:
    items = {"kind": "List", "apiVersion": "v1", "items": list(objects)}
    kubectl("create", "-f", "-", namespace=namespace, input=json.dumps(items), timeout=300)


def listed(namespace: str, kind: str) -> dict[str, dict[str, Any]]:
    out = kubectl("get", kind, "-o", "json", namespace=namespace).stdout
    return {o["metadata"]["name"]: o for o in json.loads(out)["items"]}


def resource_versions(namespace: str) -> dict[str, str]:
    objects = {**listed(namespace, "fdep"), **listed(namespace, "froute")}
    return {name: obj["metadata"]["resourceVersion"] for name, obj in objects.items()}


def tag_summary(obj: dict[str, Any]) -> str | None:
    status = obj.get("status")
    return None if status is None else status.get("tagSummary", "")


def test_one_change_writes_only_what_it_touches(running_operator: Any, namespace: str) -> None:
    create(namespace, *(deployment(v) for v in range(1, VERSIONS + 1)))
    wait_for(
        lambda: all(tag_summary(o) is not None for o in listed(namespace, "fdep").values()),
        timeout=180,
        interval=1,
        message=f"a status on each of {VERSIONS} versions",
    )
    wait_for(
        lambda: listed(namespace, "froute").get("wide.default", {}).get("status"),
        timeout=30,
        message="the default route's status",
    )
    before = resource_versions(namespace)

    # A new version and a tag moved onto an old one.
    create(namespace, deployment(VERSIONS + 1), route("wide", "stable", 125))
    wait_for(
        lambda: (
            tag_summary(listed(namespace, "fdep")[f"wide-v{VERSIONS + 1}"]) == ""
            and tag_summary(listed(namespace, "fdep")["wide-v125"]) == "stable"
            and listed(namespace, "froute")["wide.stable"].get("status")
            and listed(namespace, "froute")["wide.default"]["status"].get("highestVersion")
            == VERSIONS + 1
        ),
        timeout=60,
        message="the new version, the moved tag and the high-water mark reconciled",
    )
    after = resource_versions(namespace)
    changed = {name for name, rv in before.items() if after.get(name) != rv}
    # v125 got its tag; default its high-water mark. Nothing else was written.
    assert changed == {"wide-v125", "wide.default"}, sorted(changed)

    events = json.loads(kubectl("get", "events", "-o", "json", namespace=namespace).stdout)
    tag_events = sorted(
        e["involvedObject"]["name"] for e in events["items"] if e["reason"] == "TagsChanged"
    )
    # Only versions whose tags really changed: v1 got `default`, v125 `stable`.
    assert tag_events == ["wide-v1", "wide-v125"], tag_events
