"""Issue 23 item 4: what a consumer may do to runs, with real tokens of ServiceAccounts
bound to the chart's roles (the RBAC authorizer, the CRD's CEL and the admission policy
kitaru-invocation-writes decide; writes the test does not mean to keep are server-side
dry runs, which go through all of them).

The exploits: a consumer patching someone else's run — a made-up owner reference (the
garbage collector then deletes it), a schedule's label (the operator then prunes it, or
a Forbid schedule skips its ticks), a short TTL (retention then deletes it) — or
cancelling it, or creating a fake shadow run. Each is refused; the operator's own writes,
a producer's cancel and the garbage collector still go through.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from chart_support import bind, kitaru_as, token_client, token_of, unique
from kitaru.client.errors import Rejected
from kitaru.core.manifests import build_deployment, build_invocation, build_route
from kitaru.core.models import FlowInvocationSpec, FlowScheduleSpec
from kitaru.core.routing import RouteView
from kitaru.core.schedules import build_scheduled_run
from kitaru.core.shadow import build_shadow_invocation
from kubernetes import client
from kubernetes.client.rest import ApiException
from support import create, kubectl, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

GROUP, VERSION, PLURAL = "kitaru.dev", "v1alpha1", "flowinvocations"
FLOW = "probe_flow"
IMAGE = "kitaru.local/probe:never-run"  # no pod ever runs here
OPERATOR_ONLY = "are for the operator to change; you may only ask to cancel it"
ONLY_CANCEL = "only cancelRequested may change"


@pytest.fixture
def accounts(roles: str, namespace: str, operator_account: str) -> Iterator[dict[str, Any]]:
    """Custom-object APIs authenticated by tokens of: two consumers, a producer and the
    operator's own ServiceAccount (the chart's RBAC); and their usernames."""
    apis: dict[str, Any] = {}
    for name, role in (("alice", "consumer"), ("bob", "consumer"), ("carol", "producer")):
        bind(namespace, name, f"{roles}-{role}")
    for name in ("alice", "bob", "carol", operator_account):
        token = token_of(namespace, name)
        apis[name] = {
            "api": client.CustomObjectsApi(token_client(token)),
            "token": token,
            "user": f"system:serviceaccount:{namespace}:{name}",
        }
    apis["operator"] = apis.pop(operator_account)
    yield apis


def run_by_admin(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    """A run an admin started with kubectl: no creator recorded."""
    body = build_invocation(FLOW, name=name)
    body["spec"].update(spec)
    created = kubectl(
        "create", "-f", "-", "-o", "json", namespace=namespace, input=json.dumps(body)
    )
    found: dict[str, Any] = json.loads(created.stdout)
    return found


def status(call: Any, *args: Any, **kwargs: Any) -> tuple[int, str]:
    """(HTTP status, message) of one API call: 200 when it went through."""
    try:
        call(*args, **kwargs)
    except ApiException as exc:
        return int(exc.status), str(json.loads(exc.body).get("message"))
    return 200, ""


def patch(api: Any, namespace: str, name: str, body: dict[str, Any], dry: bool = True) -> Any:
    return status(
        api.patch_namespaced_custom_object,
        GROUP, VERSION, namespace, PLURAL, name, body,
        **({"dry_run": "All"} if dry else {}),
    )  # fmt: skip


def create_as(api: Any, namespace: str, body: dict[str, Any]) -> tuple[int, str]:
    return status(
        api.create_namespaced_custom_object,
        GROUP, VERSION, namespace, PLURAL, body, dry_run="All",
    )  # fmt: skip


def test_a_consumer_cannot_rewrite_anothers_run(accounts: dict[str, Any], namespace: str) -> None:
    victim = run_by_admin(namespace, "victims-run")
    alice = accounts["alice"]["api"]
    fake_owner = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "gone",
        "uid": "00000000-0000-0000-0000-000000000000",
    }
    for body in (
        # The garbage collector deletes a run whose only owner does not exist.
        {"metadata": {"ownerReferences": [fake_owner]}},
        # The operator prunes (history limits) and counts (Forbid) a schedule's runs.
        {"metadata": {"labels": {"kitaru.dev/schedule": "nightly"}}},
        {"metadata": {"labels": {"team": "mine-now"}}},
        {"metadata": {"annotations": {"kitaru.dev/created-by": accounts["alice"]["user"]}}},
        {"metadata": {"finalizers": ["example.com/never"]}},
    ):
        code, message = patch(alice, namespace, "victims-run", body)
        assert code == 403, (body, code, message)
        assert OPERATOR_ONLY in message, message
    # Retention, deadline and retries of someone else's run: the rest of the spec is
    # immutable for everyone (a TTL of 0 would make the operator delete it).
    for field, value in (
        ("ttlSecondsAfterFinished", 0),
        ("historyLimit", 0),
        ("activeDeadlineSeconds", 1),
        ("backoffLimit", 20),
        ("resolveDeadlineSeconds", 0),
    ):
        code, message = patch(alice, namespace, "victims-run", {"spec": {field: value}})
        assert code == 422 and ONLY_CANCEL in message, (field, code, message)
    after = json.loads(
        kubectl("get", "finv", "victims-run", "-o", "json", namespace=namespace).stdout
    )
    assert after["metadata"].get("ownerReferences") is None
    assert after["metadata"]["labels"] == victim["metadata"]["labels"]


def test_consumers_cancel_only_the_runs_they_started(
    accounts: dict[str, Any], namespace: str
) -> None:
    kubectl("apply", "-f", "-", namespace=namespace, input=json.dumps({
        "apiVersion": "v1", "kind": "List", "items": [
            build_deployment(FLOW, 1, entrypoint="probe:run", image=IMAGE),
            build_route(RouteView(FLOW, "default", True, frozenset({1}))),
        ],
    }))  # fmt: skip
    alice, bob = (kitaru_as(namespace, accounts[n]["token"]) for n in ("alice", "bob"))
    alices = alice.deployments.invoke(FLOW).exec_id
    bobs = bob.deployments.invoke(FLOW).exec_id
    stamped = json.loads(kubectl("get", "finv", alices, "-o", "json", namespace=namespace).stdout)
    assert stamped["metadata"]["annotations"]["kitaru.dev/created-by"] == accounts["alice"]["user"]

    # Bob may not cancel Alice's run, nor one nobody signed; he may cancel his own.
    with pytest.raises(Rejected) as refused:
        bob.executions.cancel(alices)
    assert (
        f"execution {alices} was started by {accounts['alice']['user']}, not "
        f"{accounts['bob']['user']}: you may cancel only the executions you started; "
        "cancelling any needs the cancel-any verb on flowinvocations (the producer role)"
    ) in refused.value.message
    run_by_admin(namespace, "admins-run")
    with pytest.raises(Rejected, match="records no creator"):
        bob.executions.cancel("admins-run")
    assert bob.executions.cancel(bobs).exec_id == bobs

    # Signing a run as someone else is refused outright.
    forged = build_invocation(FLOW, name="forged", created_by=accounts["alice"]["user"])
    code, message = create_as(accounts["bob"]["api"], namespace, forged)
    assert code == 403 and "must name the user making the request" in message, message

    # A producer (cancel-any) cancels anyone's: Alice's, the admin's.
    carol = kitaru_as(namespace, accounts["carol"]["token"])
    for exec_id in (alices, "admins-run"):
        carol.executions.cancel(exec_id)
    cancelled = kubectl("get", "finv", "-o", "json", namespace=namespace).stdout
    assert {
        i["metadata"]["name"]
        for i in json.loads(cancelled)["items"]
        if i["spec"].get("cancelRequested")
    } == {alices, bobs, "admins-run"}


def test_only_the_operator_marks_schedule_and_shadow_runs(
    accounts: dict[str, Any], namespace: str
) -> None:
    primary = run_by_admin(namespace, "primary")
    schedule = {
        "metadata": {"name": "nightly", "uid": "11111111-2222-3333-4444-555555555555"},
        "spec": {"schedule": "@daily", "flow": FLOW},
    }
    tick = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
    scheduled = build_scheduled_run(
        schedule, FlowScheduleSpec.model_validate(schedule["spec"]), tick
    )
    spec = FlowInvocationSpec.model_validate(primary["spec"])
    shadow = build_shadow_invocation(primary, spec, 2, {})
    plain = build_invocation(FLOW, name="plain")
    labelled = build_invocation(FLOW, name="labelled")
    labelled["metadata"]["labels"]["kitaru.dev/schedule"] = "nightly"
    owned = build_invocation(FLOW, name="owned")
    owned["metadata"]["ownerReferences"] = scheduled["metadata"]["ownerReferences"]
    unowned_shadow = {**shadow, "metadata": {"name": shadow["metadata"]["name"]}}

    alice = accounts["alice"]["api"]
    assert create_as(alice, namespace, plain) == (200, "")
    for body, words in (
        (shadow, "spec.shadowOf marks the shadow run of another execution"),
        (unowned_shadow, "spec.shadowOf marks the shadow run of another execution"),
        (scheduled, "mark the runs of schedules and shadows"),
        (labelled, "mark the runs of schedules and shadows"),
        (owned, "an owner reference to a kitaru.dev object"),
    ):
        code, message = create_as(alice, namespace, body)
        assert code == 403 and words in message, (body["metadata"]["name"], code, message)

    # The operator (the chart's ServiceAccount and RBAC) does all of it.
    operator = accounts["operator"]["api"]
    for body in (shadow, scheduled, labelled, owned):
        assert create_as(operator, namespace, body) == (200, ""), body["metadata"]["name"]
    assert patch(operator, namespace, "primary", {"spec": {"cancelRequested": True}}) == (200, "")
    marked = {"metadata": {"labels": {"kitaru.dev/schedule": "nightly"}}}
    assert patch(operator, namespace, "primary", marked) == (200, "")


def test_the_garbage_collector_still_orphans_and_collects_runs(namespace: str) -> None:
    """Owner references and finalizers stay writable by the garbage collector (it may
    write runs' status, as the operator may): orphaning removes a run's owner reference,
    a foreground delete removes the owner's finalizer once its runs are gone."""
    names = {}
    for policy in ("orphan", "foreground"):
        schedule = {
            "apiVersion": "kitaru.dev/v1alpha1",
            "kind": "FlowSchedule",
            "metadata": {"name": unique(policy)},
            "spec": {"schedule": "@daily", "flow": FLOW, "suspend": True},
        }
        created = json.loads(
            kubectl("create", "-f", "-", "-o", "json", namespace=namespace,
                    input=json.dumps(schedule)).stdout
        )  # fmt: skip
        tick = datetime(2026, 1, 1, tzinfo=UTC)
        run = build_scheduled_run(created, FlowScheduleSpec.model_validate(schedule["spec"]), tick)
        create(run, namespace)
        names[policy] = (created["metadata"]["name"], run["metadata"]["name"])
        kubectl("delete", "fsched", names[policy][0], f"--cascade={policy}", "--wait=false",
                namespace=namespace)  # fmt: skip

    def run_of(policy: str) -> dict[str, Any] | None:
        proc = kubectl("get", "finv", names[policy][1], "-o", "json", namespace=namespace,
                       check=False)  # fmt: skip
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    orphan = wait_for(
        lambda: (r := run_of("orphan")) and not r["metadata"].get("ownerReferences") and r,
        timeout=60,
        message="the orphaned run without its owner reference",
    )
    assert orphan["metadata"]["labels"]["kitaru.dev/schedule"] == names["orphan"][0]
    wait_for(lambda: run_of("foreground") is None, timeout=60, message="the owned run collected")
    wait_for(
        lambda: kubectl("get", "fsched", names["foreground"][0], namespace=namespace,
                        check=False).returncode != 0,
        timeout=60,
        message="the foreground-deleted schedule gone",
    )  # fmt: skip
