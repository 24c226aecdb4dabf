"""The Job that runs one invocation, and the source-snapshot encoding it mounts.

`build_job` is a pure builder: the operator creates what it returns. The Job is
named after the invocation (deterministic, so a restarted operator gets 409
instead of a duplicate) and carries the frozen resolution chain as an annotation,
so the chain can be recovered from the Job if the operator died before writing
the invocation's status.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from kitaru.core.job_control import MANAGED_BY
from kitaru.core.models import (
    FlowDeploymentSpec,
    FlowInvocationSpec,
    ResolvedChain,
    SelectorKind,
    SplitChoice,
)
from kitaru.core.names import (
    GROUP,
    GROUP_VERSION,
    LABEL_FLOW,
    LABEL_INVOCATION,
    LABEL_TAG,
    LABEL_VERSION,
    deployment_name,
    snapshot_name,
)
from kitaru.core.status import runner_image

ANNOTATION_RESOLVED = f"{GROUP}/resolved"
RUNNER_COMMAND = ["python", "-m", "kitaru.runner"]
CONTAINER_NAME = "flow"
SOURCE_VOLUME = "source"
SOURCE_MOUNT_PATH = "/var/run/kitaru/source"
TERMINATION_MESSAGE_LIMIT = 4096


class NotRunnable(ValueError):
    """The deployment names no image and its stack has no runner image."""

    reason = "NotRunnable"

    def __init__(self, flow: str, version: int) -> None:
        self.message = (
            f"deployment {deployment_name(flow, version)} has no runnable snapshot: "
            "set spec.snapshot.image or spec.stack.runnerImage"
        )
        super().__init__(self.message)


# --- source snapshot encoding (shared by the client that builds the ConfigMap) --


# The ConfigMap key of the manifest: `.kitaru/` is never shipped, so no source file's
# key can be it (`kitaru.core.sources` refuses one that would be, all the same).
SOURCE_MANIFEST_KEY = ".kitaru__manifest"


def source_key(path: str) -> str:
    """ConfigMap key of a source file: keys cannot hold '/', so it becomes '__'."""
    return path.replace("/", "__")


def source_manifest(files: Mapping[str, bytes]) -> str:
    """The `sha256sum`-style manifest of the files, sorted by path: digest, two spaces,
    path, newline per file (`sha256sum -c` checks a materialised tree against it)."""
    return "".join(f"{hashlib.sha256(files[path]).hexdigest()}  {path}\n" for path in sorted(files))


def source_sha256(files: Mapping[str, bytes]) -> str:
    """sha256 of the files' manifest: it binds both the contents and the paths, and is
    reproducible with coreutils (`sha256sum` of the manifest)."""
    return hashlib.sha256(source_manifest(files).encode()).hexdigest()


# --- the resolution chain ------------------------------------------------------


def _image(deployment: FlowDeploymentSpec, default: str | None) -> str:
    image = runner_image(deployment, default)
    if not image:
        raise NotRunnable(deployment.flow, deployment.version)
    return image


def build_chain(
    selector: SelectorKind,
    tag: str | None,
    deployment: FlowDeploymentSpec,
    inputs_hash: str,
    split: SplitChoice | None = None,
    default_image: str | None = None,
) -> ResolvedChain:
    source = deployment.snapshot.source
    return ResolvedChain(
        selector=selector,
        tag=tag,
        version=deployment.version,
        split=split,
        deployment=deployment_name(deployment.flow, deployment.version),
        snapshot_name=snapshot_name(deployment.flow, deployment.version),
        image=_image(deployment, default_image),
        source_sha256=source.sha256 if source else None,
        inputs_hash=inputs_hash,
    )


def parse_chain(raw: str | None) -> ResolvedChain | None:
    """The chain a Job was created with (its `ANNOTATION_RESOLVED`), or None if the
    annotation is missing or bad."""
    if not raw:
        return None
    try:
        return ResolvedChain.model_validate_json(raw)
    except ValueError:
        return None


# --- the Job -------------------------------------------------------------------


def job_labels(flow: str, chain: ResolvedChain, invocation_name: str) -> dict[str, str]:
    return {
        LABEL_FLOW: flow,
        LABEL_VERSION: str(chain.version),
        LABEL_TAG: chain.tag or "",
        LABEL_INVOCATION: invocation_name,
    }


def _runner_env(
    flow: str, deployment: FlowDeploymentSpec, merged_inputs: dict[str, Any]
) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "KITARU_FLOW", "value": flow},
        {"name": "KITARU_ENTRYPOINT", "value": deployment.snapshot.entrypoint},
        {"name": "KITARU_INPUTS", "value": json.dumps(merged_inputs, sort_keys=True)},
        {"name": "KITARU_INPUT_SCHEMA", "value": json.dumps(deployment.input_schema)},
    ]
    source = deployment.snapshot.source
    if source:
        env += [
            {"name": "KITARU_SOURCE_DIR", "value": SOURCE_MOUNT_PATH},
            {"name": "KITARU_SOURCE_SHA256", "value": source.sha256},
            {"name": "KITARU_SOURCE_FILES", "value": json.dumps(source.files)},
        ]
    return env


def _stack_env(deployment: FlowDeploymentSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = []
    for var in deployment.stack.env:
        item: dict[str, Any] = {"name": var.name}
        if var.secret_key_ref:
            item["valueFrom"] = {"secretKeyRef": var.secret_key_ref.wire()}
        elif var.config_map_key_ref:
            item["valueFrom"] = {"configMapKeyRef": var.config_map_key_ref.wire()}
        else:
            item["value"] = var.value or ""
        env.append(item)
    return env


def _stack_env_from(deployment: FlowDeploymentSpec) -> list[dict[str, Any]]:
    env_from: list[dict[str, Any]] = []
    for source in deployment.stack.env_from:
        if source.config_map:
            env_from.append({"configMapRef": {"name": source.config_map}})
        if source.secret:
            env_from.append({"secretRef": {"name": source.secret}})
    return env_from


RESTRICTED_CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def build_job(
    invocation_name: str,
    invocation_uid: str,
    namespace: str,
    flow: str,
    chain: ResolvedChain,
    deployment: FlowDeploymentSpec,
    merged_inputs: dict[str, Any],
    inv_spec: FlowInvocationSpec,
) -> dict[str, Any]:
    """The batch/v1 Job manifest of one invocation (see the module docstring)."""
    labels = job_labels(flow, chain, invocation_name)
    container = _flow_container(flow, chain, deployment, merged_inputs)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": invocation_name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {
                ANNOTATION_RESOLVED: chain.model_dump_json(by_alias=True, exclude_none=True)
            },
            "ownerReferences": [
                {
                    "apiVersion": GROUP_VERSION,
                    "kind": "FlowInvocation",
                    "name": invocation_name,
                    "uid": invocation_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": _job_spec(_pod_spec(container, deployment), labels, deployment, inv_spec),
    }


def _flow_container(
    flow: str, chain: ResolvedChain, deployment: FlowDeploymentSpec, merged_inputs: dict[str, Any]
) -> dict[str, Any]:
    """The runner in the resolved image, with the runner contract and the stack's env."""
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": chain.image,
        "command": list(RUNNER_COMMAND),
        "env": _runner_env(flow, deployment, merged_inputs) + _stack_env(deployment),
        "securityContext": RESTRICTED_CONTAINER_SECURITY,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    env_from = _stack_env_from(deployment)
    if env_from:
        container["envFrom"] = env_from
    if deployment.stack.resources:
        container["resources"] = deployment.stack.resources.wire()
    if deployment.snapshot.source:
        container["volumeMounts"] = [
            {"name": SOURCE_VOLUME, "mountPath": SOURCE_MOUNT_PATH, "readOnly": True}
        ]
    return container


def _pod_spec(container: dict[str, Any], deployment: FlowDeploymentSpec) -> dict[str, Any]:
    """One restricted pod that never restarts in place (retries are new pods)."""
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
    }
    if deployment.stack.service_account_name:
        pod_spec["serviceAccountName"] = deployment.stack.service_account_name
    else:
        # A run needs no API access: without a ServiceAccount named in its stack it gets
        # no token at all (not the namespace default's), so a flow has none to leak.
        pod_spec["automountServiceAccountToken"] = False
    source = deployment.snapshot.source
    if source:
        pod_spec["volumes"] = [{"name": SOURCE_VOLUME, "configMap": {"name": source.config_map}}]
    return pod_spec


def _job_spec(
    pod_spec: dict[str, Any],
    labels: dict[str, str],
    deployment: FlowDeploymentSpec,
    inv_spec: FlowInvocationSpec,
) -> dict[str, Any]:
    """Retries and deadline: the invocation's own, else its version's stack."""
    stack = deployment.stack
    backoff_limit = (
        inv_spec.backoff_limit if inv_spec.backoff_limit is not None else stack.backoff_limit
    )
    deadline = inv_spec.active_deadline_seconds or stack.active_deadline_seconds
    job_spec: dict[str, Any] = {
        # The operator creates the pod and keeps the status itself (`job_control`).
        "managedBy": MANAGED_BY,
        "backoffLimit": backoff_limit,
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    if deadline:
        job_spec["activeDeadlineSeconds"] = deadline
    return job_spec
