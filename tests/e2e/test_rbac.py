"""The chart's roles with real ServiceAccount tokens (TokenRequest API).

The roles are rendered from the chart with the pinned helm (a unique name prefix per
run, since ClusterRoles are cluster-scoped) and bound with RoleBindings, as a platform
team would. Each request is made with the ServiceAccount's bearer token alone, so the
API server's RBAC authorizer decides: nothing here mocks it. The role table of
docs/security.md is checked cell by cell.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from chart_support import apply, bind, in_namespace, token_client, token_of, unique
from kitaru.client.client import DEFAULT_SERVICE_ACCOUNT as CLIENT
from kitaru.core.manifests import (
    build_client_identity,
    build_deployment,
    build_invocation,
    build_route,
)
from kitaru.core.routing import RouteView
from kubernetes import client
from kubernetes.client.rest import ApiException
from support import REPO, kubectl, runner_image, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("crds_installed")]

GROUP, VERSION = "kitaru.dev", "v1alpha1"


@pytest.fixture
def other_namespace(cluster: Any) -> Iterator[str]:
    name = unique("kt-rbac-other")
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def api_as(namespace: str, service_account: str, cluster_role: str) -> client.CustomObjectsApi:
    """A client authenticated only by a fresh token of a ServiceAccount bound to the role."""
    bind(namespace, service_account, cluster_role)
    return client.CustomObjectsApi(token_client(token_of(namespace, service_account)))


def status_of(api: client.CustomObjectsApi, verb: str, namespace: str, *args: Any) -> int:
    """The HTTP status of `api.<verb>_namespaced_custom_object(GROUP, VERSION, namespace,
    *args)`: 200 when it went through, else the error's."""
    call = getattr(api, f"{verb}_namespaced_custom_object")
    try:
        call(GROUP, VERSION, namespace, *args)
    except ApiException as exc:
        return int(exc.status)
    return 200


def expect(api: client.CustomObjectsApi, namespace: str, *calls: tuple[Any, ...]) -> None:
    """Make each `(expected status, verb, plural, *arguments)` call in order and check it."""
    for expected, verb, *args in calls:
        assert status_of(api, verb, namespace, *args) == expected, (verb, args)


def flow_deployment(version: int) -> dict[str, Any]:
    return build_deployment("rbac_probe", version, entrypoint="probe:run", image=runner_image())


def flow_route(tag: str, versions: list[int], exclusive: bool = True) -> dict[str, Any]:
    return build_route(RouteView("rbac_probe", tag, exclusive, frozenset(versions)))


def flow_invocation(name: str) -> dict[str, Any]:
    return build_invocation("rbac_probe", name=name)


def seed(namespace: str) -> None:
    """What a producer deployed earlier: v1 with `default`, a shared `beta` tag."""
    objects = [flow_deployment(1), flow_route("default", [1]), flow_route("beta", [1], False)]
    apply(*(in_namespace(obj, namespace) for obj in objects))


def test_consumer_invokes_but_cannot_deploy_tag_or_delete(roles: str, namespace: str) -> None:
    seed(namespace)
    consumer = api_as(namespace, "ci-consumer", f"{roles}-consumer")
    expect(
        consumer,
        namespace,
        (200, "create", "flowinvocations", flow_invocation("run-1")),
        (200, "list", "flowdeployments"),
        (200, "get", "flowroutes", "rbac-probe.default"),
        # Deploy, tag, untag, delete: all forbidden.
        (403, "create", "flowdeployments", flow_deployment(2)),
        (403, "create", "flowroutes", flow_route("stable", [1])),
        (403, "patch", "flowroutes", "rbac-probe.beta", {"spec": {"versions": [1]}}),
        (403, "delete", "flowroutes", "rbac-probe.beta"),
        (403, "delete", "flowdeployments", "rbac-probe-v1"),
    )


def test_producer_deploys_and_tags(roles: str, namespace: str) -> None:
    seed(namespace)
    producer = api_as(namespace, "ci-producer", f"{roles}-producer")
    expect(
        producer,
        namespace,
        (200, "create", "flowdeployments", flow_deployment(2)),
        (200, "create", "flowroutes", flow_route("stable", [2])),
        (200, "patch", "flowroutes", "rbac-probe.beta", {"spec": {"versions": [1, 2]}}),
        (200, "create", "flowinvocations", flow_invocation("run-p")),
        # Deleting an untagged version is the producer's to do.
        (200, "create", "flowdeployments", flow_deployment(3)),
        (200, "delete", "flowdeployments", "rbac-probe-v3"),
    )


def test_viewer_reads_only(roles: str, namespace: str) -> None:
    seed(namespace)
    viewer = api_as(namespace, "dashboard", f"{roles}-viewer")
    expect(
        viewer,
        namespace,
        (200, "list", "flowdeployments"),
        (200, "list", "flowroutes"),
        (200, "list", "flowinvocations"),
        (403, "create", "flowinvocations", flow_invocation("run-v")),
    )


def test_roles_do_not_cross_namespaces(roles: str, namespace: str, other_namespace: str) -> None:
    seed(other_namespace)
    consumer = api_as(namespace, "ci-consumer", f"{roles}-consumer")
    producer = api_as(namespace, "ci-producer", f"{roles}-producer")

    expect(consumer, namespace, (200, "create", "flowinvocations", flow_invocation("here")))
    for api in (consumer, producer):
        expect(
            api,
            other_namespace,
            (403, "create", "flowinvocations", flow_invocation("there")),
            (403, "get", "flowdeployments", "rbac-probe-v1"),
        )
    expect(producer, other_namespace, (403, "create", "flowdeployments", flow_deployment(2)))


def test_roles_aggregate_into_the_builtin_roles(roles: str, namespace: str) -> None:
    seed(namespace)
    editor = api_as(namespace, "editor", "edit")
    reader = api_as(namespace, "reader", "view")

    # The aggregation controller fills the built-in roles asynchronously.
    def edit_has_producer_rules() -> bool:
        rules = json.loads(kubectl("get", "clusterrole", "edit", "-o", "json").stdout)["rules"]
        return any(
            GROUP in r.get("apiGroups", []) and "create" in r.get("verbs", []) for r in rules
        )

    wait_for(
        edit_has_producer_rules,
        timeout=60,
        interval=0.5,
        message="edit to aggregate the producer role",
    )
    expect(editor, namespace, (200, "create", "flowdeployments", flow_deployment(2)))
    expect(
        reader,
        namespace,
        (200, "list", "flowroutes"),
        (403, "create", "flowdeployments", flow_deployment(3)),
    )


# --- the role table of docs/security.md, cell by cell --------------------------------

ROLE_DOC = REPO / "docs" / "security.md"
# cancel-any: the custom verb admission asks about before someone cancels a run they did
# not start (kitaru-invocation-writes); RBAC answers it like any verb.
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "cancel-any")
SUBJECTS = ("viewer", "consumer", "producer", "client", "operator", "runner")
CLUSTER_SCOPED = {"namespaces"}
NO_VERBS = "—"


@dataclass(frozen=True)
class Row:
    group: str  # "" for the core group
    resource: str
    subresource: str
    name: str  # "" for any object of the kind
    allowed: dict[str, frozenset[str]]  # subject -> verbs

    def __str__(self) -> str:
        what = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return " ".join(filter(None, (self.group or "core", what, self.name)))


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def role_table() -> list[Row]:
    """The table between the role-table markers of docs/security.md."""
    block = ROLE_DOC.read_text().split("<!-- role-table")[1].split("<!-- /role-table -->")[0]
    header, _rule, *lines = [line for line in block.splitlines() if line.startswith("|")]
    assert tuple(_cells(header)[1:]) == SUBJECTS, _cells(header)
    rows = []
    for line in lines:
        resource, *cells = _cells(line)
        group, kind, *name = resource.split()
        plural, _, sub = kind.partition("/")
        verbs = {}
        for subject, cell in zip(SUBJECTS, cells, strict=True):
            listed = frozenset() if cell == NO_VERBS else frozenset(cell.split())
            assert listed <= set(VERBS), (resource, subject, cell)
            verbs[subject] = listed
        rows.append(Row("" if group == "core" else group, plural, sub, "".join(name), verbs))
    return rows


def allowed_verbs(api: client.AuthorizationV1Api, row: Row, namespace: str) -> frozenset[str]:
    """The verbs the API server allows the token's subject on `row` (SelfSubjectAccessReview:
    the authenticated identity is the token's, nothing else)."""
    allowed = set()
    for verb in VERBS:
        review = api.create_self_subject_access_review(
            client.V1SelfSubjectAccessReview(
                spec=client.V1SelfSubjectAccessReviewSpec(
                    resource_attributes=client.V1ResourceAttributes(
                        group=row.group,
                        resource=row.resource,
                        subresource=row.subresource or None,
                        name=row.name or None,
                        verb=verb,
                        namespace=None if row.resource in CLUSTER_SCOPED else namespace,
                    )
                )
            )
        )
        if review.status.allowed:
            allowed.add(verb)
    return frozenset(allowed)


def test_every_cell_of_the_role_table(roles: str, namespace: str, operator_account: str) -> None:
    # The client identity as `kitaru auth token` makes it on first use.
    identity = json.dumps(
        {"kind": "List", "apiVersion": "v1", "items": build_client_identity(CLIENT)}
    )
    kubectl("apply", "-f", "-", "-n", namespace, input=identity)
    accounts = {"client": CLIENT, "operator": operator_account, "runner": "default"}
    for subject in ("viewer", "consumer", "producer"):
        bind(namespace, f"as-{subject}", f"{roles}-{subject}")
        accounts[subject] = f"as-{subject}"
    rows = role_table()
    assert len(rows) * len(SUBJECTS) * len(VERBS) == 1152  # the count docs/security.md gives
    apis = {
        s: client.AuthorizationV1Api(token_client(token_of(namespace, accounts[s])))
        for s in SUBJECTS
    }

    def mismatches() -> list[str]:
        wrong = []
        for subject, api in apis.items():
            for row in rows:
                actual = allowed_verbs(api, row, namespace)
                if actual != row.allowed[subject]:
                    expected = " ".join(sorted(row.allowed[subject])) or NO_VERBS
                    allows = " ".join(sorted(actual)) or NO_VERBS
                    wrong.append(f"{subject} on {row}: table says {expected}, API allows {allows}")
        return wrong

    wrong: list[str] = []

    def table_holds() -> bool:
        wrong[:] = mismatches()
        return not wrong

    # New RoleBindings reach the RBAC authorizer's cache within moments.
    with contextlib.suppress(AssertionError):
        wait_for(table_holds, timeout=30, interval=1)
    assert not wrong, "\n".join(wrong)
