"""Flows that really run: the test flows of tests/e2e/flows shipped as an immutable source
ConfigMap (checked against its sha256), FlowDeployments, routes and invocations built by
`kitaru.core.manifests` and created with plain API calls, and polling of their status."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import kubernetes
from kitaru.core.inputs import schema_from_signature
from kitaru.core.jobs import source_key, source_sha256
from kitaru.core.manifests import build_deployment, build_invocation, build_route
from kitaru.core.models import SourceSnapshot
from kitaru.core.names import DEFAULT_TAG, route_name
from kitaru.core.routing import RouteView
from support import runner_image, wait_for

sys.path.insert(0, str(Path(__file__).parent / "e2e"))
from flows import research

E2E = Path(__file__).parent / "e2e"  # the flows package lives beside the e2e tests

GROUP, VERSION = "kitaru.dev", "v1alpha1"
FLOW_FILES = ("flows/__init__.py", "flows/research.py")
FINISHED = ("Completed", "Failed", "Cancelled")


class Kitaru:
    """Just enough of a client for these tests (the real one is kitaru.client)."""

    def __init__(self, k8s: kubernetes.client.ApiClient, namespace: str) -> None:
        self.ns = namespace
        self.custom = kubernetes.client.CustomObjectsApi(k8s)
        self.core = kubernetes.client.CoreV1Api(k8s)
        self.batch = kubernetes.client.BatchV1Api(k8s)
        self.source: SourceSnapshot | None = None

    def ship_flows(self) -> SourceSnapshot:
        files = {path: (E2E / path).read_bytes() for path in FLOW_FILES}
        self.core.create_namespaced_config_map(
            self.ns,
            {
                "metadata": {"name": "flows-source"},
                "immutable": True,
                "data": {source_key(p): data.decode() for p, data in files.items()},
            },
        )
        self.source = SourceSnapshot(
            config_map="flows-source", sha256=source_sha256(files), files=sorted(files)
        )
        return self.source

    def deploy(
        self,
        flow: str,
        version: int,
        function: str,
        inputs: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        """Version `version` of `flow` running `flows.research:<function>` from the shipped
        source; `options` are `build_deployment`'s (a service account, retries)."""
        inputs = inputs or {}
        body = build_deployment(
            flow,
            version,
            entrypoint=f"flows.research:{function}",
            image=runner_image(),
            inputs=inputs,
            input_schema=schema_from_signature(getattr(research, function), inputs),
            source=self.source,
            **options,
        )
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.ns, "flowdeployments", body
        )

    def route(self, flow: str, tag: str, *versions: int, exclusive: bool = True) -> None:
        body = build_route(RouteView(flow, tag, exclusive, frozenset(versions)))
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, "flowroutes", body)

    def wait_default(self, flow: str) -> None:
        name = route_name(flow, DEFAULT_TAG)
        wait_for(
            lambda: self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.ns, "flowroutes", name
            ),
            30,
        )

    def invoke(self, flow: str, **options: Any) -> str:
        """Create an invocation and return its name; `options` are `build_invocation`'s
        (a fixed name, tag or version, inputs, retention, deadlines, retries)."""
        body = build_invocation(flow, **options)
        created = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.ns, "flowinvocations", body
        )
        return str(created["metadata"]["name"])

    def status(self, name: str) -> dict[str, Any]:
        obj = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.ns, "flowinvocations", name
        )
        return dict(obj.get("status") or {})

    def wait(
        self, name: str, timeout: float = 90, phases: tuple[str, ...] = FINISHED
    ) -> dict[str, Any]:
        return wait_for(
            lambda: (s := self.status(name)).get("phase") in phases and s,
            timeout,
            message=f"invocation {name} in {phases}",
        )

    def jobs(self) -> list[Any]:
        return list(self.batch.list_namespaced_job(self.ns).items)

    def job_exists(self, name: str) -> bool:
        return any(job.metadata.name == name for job in self.jobs())


def reason(status: dict[str, Any]) -> str:
    return str(status.get("reason"))
