"""Names, patterns and labels shared by every surface.

Object names encode (flow, version) and (flow, tag), so the API server's name
uniqueness alone guarantees one FlowDeployment per version and one FlowRoute per
tag, whichever client writes them.
"""

from __future__ import annotations

import re

GROUP = "kitaru.dev"
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{GROUP}/{API_VERSION}"

DEPLOYMENTS = "flowdeployments"
ROUTES = "flowroutes"
INVOCATIONS = "flowinvocations"

DEFAULT_TAG = "default"

FLOW_PATTERN = r"^[a-z][a-z0-9_]*$"
FLOW_MAX_LENGTH = 48
TAG_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
TAG_MAX_LENGTH = 63

LABEL_FLOW = f"{GROUP}/flow"
LABEL_VERSION = f"{GROUP}/version"
LABEL_TAG = f"{GROUP}/tag"
LABEL_INVOCATION = f"{GROUP}/invocation"
LABEL_SOURCE = f"{GROUP}/source"
ANNOTATION_HIGHEST_VERSION = f"{GROUP}/highest-version"
ANNOTATION_DELETING_FLOW = f"{GROUP}/deleting-flow"

_FLOW_RE = re.compile(FLOW_PATTERN)
_TAG_RE = re.compile(TAG_PATTERN)
_DEPLOYMENT_NAME_RE = re.compile(r"^(?P<flow>[a-z][a-z0-9-]*)-v(?P<version>[1-9][0-9]*)$")


class InvalidName(ValueError):
    """A flow name or tag that does not match its pattern."""


def validate_flow(flow: str) -> str:
    if len(flow) > FLOW_MAX_LENGTH or not _FLOW_RE.match(flow):
        raise InvalidName(
            f"invalid flow name {flow!r}: use a lowercase Python identifier "
            f"(letters, digits, '_'; starting with a letter; at most {FLOW_MAX_LENGTH} characters)"
        )
    return flow


def validate_tag(tag: str) -> str:
    if len(tag) > TAG_MAX_LENGTH or not _TAG_RE.match(tag):
        raise InvalidName(
            f"invalid tag {tag!r}: use lowercase letters, digits and '-', starting and "
            f"ending with a letter or digit, at most {TAG_MAX_LENGTH} characters"
        )
    return tag


def flow_dns(flow: str) -> str:
    """The DNS form of a flow name; bijective because flows cannot contain '-'."""
    return flow.replace("_", "-")


def flow_from_dns(dns: str) -> str:
    return dns.replace("-", "_")


def deployment_name(flow: str, version: int) -> str:
    return f"{flow_dns(flow)}-v{version}"


def route_name(flow: str, tag: str) -> str:
    return f"{flow_dns(flow)}.{tag}"


def snapshot_name(flow: str, version: int) -> str:
    """Kitaru's backend snapshot name, shown in status and output."""
    return f"kitaru::{flow}::v{version}"


def parse_deployment_name(name: str) -> tuple[str, int] | None:
    """(flow, version) for a well-formed FlowDeployment name, else None."""
    match = _DEPLOYMENT_NAME_RE.match(name)
    if not match:
        return None
    return flow_from_dns(match["flow"]), int(match["version"])
