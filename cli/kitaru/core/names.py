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
# Gated promotions (kitaru.core.promotion). The defaults: 20 runs is where a 0.95 gate
# stops being one failure's coin flip; a window longer than a year is a schedule.
PROMOTION_DEFAULT_MIN_RUNS = 20
PROMOTION_DEFAULT_MIN_SUCCESS = 0.95
PROMOTION_MAX_AFTER_SECONDS = 366 * 86400
INVOCATIONS = "flowinvocations"
SCHEDULES = "flowschedules"

DEFAULT_TAG = "default"

FLOW_PATTERN = r"^[a-z][a-z0-9_]*$"
FLOW_MAX_LENGTH = 48
TAG_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
TAG_MAX_LENGTH = 63
# An execution id is a FlowInvocation's name: a DNS subdomain of at most 63 characters
# (the CRD's limit: it names the Job).
EXECUTION_ID_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
EXECUTION_ID_MAX_LENGTH = 63
# A schedule's runs are named <schedule>-<minutes since the epoch> (up to 10 digits):
# 52 characters leave room for that within an execution id (as a CronJob's name does).
SCHEDULE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
SCHEDULE_NAME_MAX_LENGTH = 52

LABEL_FLOW = f"{GROUP}/flow"
LABEL_VERSION = f"{GROUP}/version"
LABEL_TAG = f"{GROUP}/tag"
LABEL_INVOCATION = f"{GROUP}/invocation"
LABEL_SOURCE = f"{GROUP}/source"
LABEL_SCHEDULE = f"{GROUP}/schedule"
# On a scheduled run: the tick it was started for (RFC 3339).
ANNOTATION_SCHEDULED_AT = f"{GROUP}/scheduled-at"
# On an invocation: who started it, as the API server names them (admission refuses any
# other value); a consumer may cancel the runs it started (kitaru-invocation-writes).
ANNOTATION_CREATED_BY = f"{GROUP}/created-by"
# The RBAC verb (on flowinvocations) that lets its holder cancel runs others started.
VERB_CANCEL_ANY = "cancel-any"
ANNOTATION_HIGHEST_VERSION = f"{GROUP}/highest-version"
# On a FlowRoute: the versions (comma-separated) routed there on purpose although their
# input schema rejects inputs the previous target accepted (`--force`, or by hand).
ANNOTATION_SCHEMA_ACCEPTED = f"{GROUP}/schema-accepted"
ANNOTATION_DELETING_FLOW = f"{GROUP}/deleting-flow"

_FLOW_RE = re.compile(FLOW_PATTERN)
_TAG_RE = re.compile(TAG_PATTERN)
_EXECUTION_ID_RE = re.compile(EXECUTION_ID_PATTERN)
_SCHEDULE_NAME_RE = re.compile(SCHEDULE_NAME_PATTERN)
_DEPLOYMENT_NAME_RE = re.compile(r"^(?P<flow>[a-z][a-z0-9-]*)-v(?P<version>[1-9][0-9]*)$")


class InvalidName(ValueError):
    """A flow name, tag, version or execution id that does not match its format."""


class InvalidVersion(InvalidName):
    """A version that is not a whole number of at least 1."""


SHOWN_MAX_LENGTH = 80


def shown(value: object) -> str:
    """A user's value quoted for an error message: repr() escapes control characters, and
    a very long value is cut, so a hostile string cannot flood or rewrite a terminal."""
    text = repr(value)
    if len(text) <= SHOWN_MAX_LENGTH:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else type(value).__name__
    return f"{text[:SHOWN_MAX_LENGTH]}... ({size})"


def _matches(value: object, pattern: re.Pattern[str], max_length: int) -> bool:
    # fullmatch: Python's `$` also matches before a final newline, Go's (the API server's) not.
    return isinstance(value, str) and len(value) <= max_length and bool(pattern.fullmatch(value))


def validate_flow(flow: str) -> str:
    if not _matches(flow, _FLOW_RE, FLOW_MAX_LENGTH):
        raise InvalidName(
            f"invalid flow name {shown(flow)}: use a lowercase Python identifier "
            f"(letters, digits, '_'; starting with a letter; at most {FLOW_MAX_LENGTH} characters)"
        )
    return flow


def validate_tag(tag: str) -> str:
    if not _matches(tag, _TAG_RE, TAG_MAX_LENGTH):
        raise InvalidName(
            f"invalid tag {shown(tag)}: use lowercase letters, digits and '-', starting and "
            f"ending with a letter or digit, at most {TAG_MAX_LENGTH} characters"
        )
    return tag


def validate_version(version: int) -> int:
    # bool is an int in Python; True is not version 1.
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidVersion(
            f"invalid version {shown(version)}: versions are whole numbers starting at 1"
        )
    return version


def validate_execution_id(exec_id: str) -> str:
    if not _matches(exec_id, _EXECUTION_ID_RE, EXECUTION_ID_MAX_LENGTH):
        raise InvalidName(
            f"invalid execution id {shown(exec_id)}: execution ids are lowercase letters, "
            f"digits, '-' and '.', at most {EXECUTION_ID_MAX_LENGTH} characters, as printed by "
            "kitaru invoke or kitaru executions list"
        )
    return exec_id


ROUTING_KEY_MAX_LENGTH = 256


class InvalidRoutingKey(InvalidName):
    """A routing key that is empty or too long."""


def check_routing_key(key: str) -> str:
    """A routing key (sticky routing on a split tag): any text of 1 to 256 characters."""
    if not isinstance(key, str) or not 1 <= len(key) <= ROUTING_KEY_MAX_LENGTH:
        raise InvalidRoutingKey(
            f"invalid routing key {shown(str(key))}: a routing key is 1 to "
            f"{ROUTING_KEY_MAX_LENGTH} characters (e.g. a user or tenant id)"
        )
    return key


def validate_schedule_name(name: str) -> str:
    if not _matches(name, _SCHEDULE_NAME_RE, SCHEDULE_NAME_MAX_LENGTH):
        raise InvalidName(
            f"invalid schedule name {shown(name)}: use lowercase letters, digits and '-', "
            f"starting and ending with a letter or digit, at most {SCHEDULE_NAME_MAX_LENGTH} "
            "characters"
        )
    return name


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
