"""Issue 23 item 6: tokens of the project's client identity are as short-lived and as
narrow as documented, with real tokens against the real API server.

- The API server (admission) refuses a kitaru-client token living longer than a day,
  whoever asks, and a Secret that would hold a never-expiring one.
- `kitaru auth token` asks the API server what a fresh token may do and refuses one that
  may do more than the client Role (a widened Role, an extra binding).
- A consumer who may not create the client identity is told to bind the chart's client
  role, never the consumer role (which may mint tokens itself); doing so works.
"""

from __future__ import annotations

import json

import pytest
from chart_support import bind, kitaru_as, token_client, token_of
from kitaru.client.errors import Rejected
from kubernetes import client
from kubernetes.client.rest import ApiException
from support import kubectl, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

CLIENT = "kitaru-client"
TOO_LONG = "tokens of ServiceAccount kitaru-client live at most 86400 seconds (a day)"


def client_identity_hint(namespace: str, role_prefix: str = "kitaru") -> str:
    """What a project admin is told to run: the chart's client role, never the consumer's."""
    return (
        f"kubectl -n {namespace} create serviceaccount {CLIENT} && kubectl -n {namespace} "
        f"create rolebinding {CLIENT} --clusterrole={role_prefix}-client "
        f"--serviceaccount={namespace}:{CLIENT}"
    )


def request_token(api: client.CoreV1Api, namespace: str, seconds: int) -> tuple[int, str]:
    body = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
    )
    try:
        api.create_namespaced_service_account_token(CLIENT, namespace, body)
    except ApiException as exc:
        return int(exc.status), str(json.loads(exc.body).get("message"))
    return 201, ""


def test_client_tokens_live_at_most_a_day(roles: str, namespace: str) -> None:
    kubectl("create", "serviceaccount", CLIENT, namespace=namespace)
    bind(namespace, "ci", f"{roles}-consumer")
    consumer = client.CoreV1Api(token_client(token_of(namespace, "ci")))
    assert request_token(consumer, namespace, 86400) == (201, "")
    code, message = request_token(consumer, namespace, 86401)
    assert code == 422 and TOO_LONG in message, (code, message)
    # An admin is held to it too (kubectl create token), and other accounts are not.
    refused = kubectl("create", "token", CLIENT, "--duration=48h", namespace=namespace, check=False)
    assert refused.returncode != 0 and TOO_LONG in refused.stderr, refused.stderr
    kubectl("create", "serviceaccount", "batch-job", namespace=namespace)
    kubectl("create", "token", "batch-job", "--duration=48h", namespace=namespace)
    # A legacy token Secret never expires: refused for kitaru-client.
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": {
            "name": "forever",
            "annotations": {"kubernetes.io/service-account.name": CLIENT},
        },
    }
    made = kubectl("create", "-f", "-", namespace=namespace, input=json.dumps(secret), check=False)
    assert made.returncode != 0 and "would never expire" in made.stderr, made.stderr


def test_auth_token_refuses_a_client_that_may_do_more(roles: str, namespace: str) -> None:
    kubectl("create", "serviceaccount", "owner", namespace=namespace)
    kubectl(
        "create", "rolebinding", "owner", "--clusterrole=cluster-admin",
        f"--serviceaccount={namespace}:owner", namespace=namespace,
    )  # fmt: skip
    admin = kitaru_as(namespace, token_of(namespace, "owner"))
    assert admin.auth_token(600)  # creates the client identity: the client Role only

    # Someone widens it: an extra binding of the producer role.
    kubectl(
        "create", "rolebinding", "too-much", f"--clusterrole={roles}-producer",
        f"--serviceaccount={namespace}:{CLIENT}", namespace=namespace,
    )  # fmt: skip

    def refused() -> str:
        try:
            admin.auth_token(600)
        except Rejected as exc:
            return exc.message
        return ""

    message = wait_for(refused, timeout=30, message="the widened client refused")
    assert f"ServiceAccount '{CLIENT}' in project '{namespace}' may do more than invoke" in message
    assert "delete kitaru.dev/flowdeployments" in message
    assert "create serviceaccounts/token kitaru-client" in message
    assert "none was printed" in message
    kubectl("delete", "rolebinding", "too-much", namespace=namespace)
    wait_for(lambda: not refused(), timeout=30, message="the client Role alone accepted")

    # ...or edits its Role.
    role = json.loads(kubectl("get", "role", CLIENT, "-o", "json", namespace=namespace).stdout)
    role["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
    kubectl("replace", "-f", "-", namespace=namespace, input=json.dumps(role))
    assert "get secrets" in wait_for(refused, timeout=30, message="the edited Role refused")


def test_a_consumer_is_told_to_bind_the_client_role(roles: str, namespace: str) -> None:
    bind(namespace, "ci", f"{roles}-consumer")
    consumer = kitaru_as(namespace, token_of(namespace, "ci"))
    with pytest.raises(Rejected) as missing:
        consumer.auth_token(600)
    assert missing.value.kind == "ServiceAccountNotFound"
    message = missing.value.message
    assert client_identity_hint(namespace) in message
    assert "--clusterrole=kitaru-client" in message
    assert "--clusterrole=kitaru-consumer" not in message
    # The admin follows the hint, with this cluster's role prefix: the token works.
    hint = client_identity_hint(namespace, role_prefix=roles)
    for command in hint.split(" && "):
        kubectl(*command.split()[1:])
    token = wait_for(lambda: consumer.auth_token(600), timeout=30, message="a client token")
    reviews = client.AuthorizationV1Api(token_client(token))
    review = reviews.create_self_subject_access_review(
        client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    namespace=namespace,
                    verb="create",
                    resource="serviceaccounts",
                    subresource="token",
                    name=CLIENT,
                )
            )
        )
    )
    assert not review.status.allowed
