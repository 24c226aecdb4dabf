"""API-tier fixtures owned by the CRD/admission tests: install crds/ once per session."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from support import REPO, kubectl, wait_for

CRDS = REPO / "crds"
CRD_NAMES = ("flowdeployments.kitaru.dev", "flowroutes.kitaru.dev", "flowinvocations.kitaru.dev")


def create(obj: dict, namespace: str, check: bool = True):
    """`kubectl create` one object given as a dict (JSON is YAML)."""
    return kubectl("create", "-f", "-", namespace=namespace, input=json.dumps(obj), check=check)


def deployment(flow: str, version: int, *, image: str | None = "kitaru/runner:test") -> dict:
    snapshot: dict = {"entrypoint": f"flows.demo:{flow}"}
    if image is not None:
        snapshot["image"] = image
    return {
        "apiVersion": "kitaru.dev/v1alpha1",
        "kind": "FlowDeployment",
        "metadata": {"name": f"{flow.replace('_', '-')}-v{version}"},
        "spec": {"flow": flow, "version": version, "snapshot": snapshot},
    }


def route(
    flow: str,
    tag: str,
    *versions: int,
    exclusive: bool = True,
    annotations: dict[str, str] | None = None,
) -> dict:
    metadata: dict = {"name": f"{flow.replace('_', '-')}.{tag}"}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "kitaru.dev/v1alpha1",
        "kind": "FlowRoute",
        "metadata": metadata,
        "spec": {"flow": flow, "tag": tag, "exclusive": exclusive, "versions": list(versions)},
    }


def _denied(*args: str, namespace: str) -> bool:
    proc = kubectl(*args, "--dry-run=server", namespace=namespace, check=False)
    return proc.returncode != 0 and "ValidatingAdmissionPolicy" in proc.stderr


@pytest.fixture(scope="session")
def crds_installed(cluster: object) -> Iterator[None]:
    """`kubectl apply -f crds/`, then wait until the CRDs serve and every admission
    policy denies (dry-run) what it must: policies take a moment to become effective."""
    kubectl("apply", "-f", str(CRDS))
    kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in CRD_NAMES)
    )
    probe = f"t-crds-probe-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", probe)
    try:
        wait_for(
            lambda: create(deployment("probe", 1), probe, check=False).returncode == 0,
            timeout=30,
            message="FlowDeployments can be created",
        )
        create(route("probe", "default", 1, annotations={"kitaru.dev/highest-version": "1"}), probe)
        for args in (
            ("delete", "flowdeployment", "probe-v1"),
            ("delete", "flowroute", "probe.default"),
        ):
            wait_for(lambda a=args: _denied(*a, namespace=probe), timeout=60, message=str(args))
        wait_for(
            lambda: "never reused" in create(deployment("probe", 1), probe, check=False).stderr,
            timeout=60,
            message="reused versions are denied",
        )
        yield
    finally:
        kubectl("delete", "namespace", probe, "--wait=false", check=False)
