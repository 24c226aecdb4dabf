"""The in-cluster dashboard serves only people a real authenticating proxy signed in,
and acts as each of them (issue 23, item 2).

The proxy is oauth2-proxy (`build.sh authproxy`), signing people in with passwords (its
htpasswd mode needs no identity provider). alice is a viewer, bob a consumer, carol a
producer (RoleBindings to the chart's roles, for users); dave has a password and is a
producer, but is not one of the users the dashboard may act as. The dashboard's own
ServiceAccount is also bound to the consumer role, to show it is never used.

- Behind an external proxy: `kitaru ui --auth-proxy --proxy-secret-file` with a token
  of the chart's dashboard ServiceAccount (its impersonation RBAC applied from the
  chart), oauth2-proxy in front injecting the user and the shared secret; host
  processes, no pod.
- The chart itself (needs the node): the dashboard and its oauth2-proxy sidecar in one
  restricted pod, reached as people reach it, through `kubectl port-forward` of its
  ClusterIP Service; a run started there completes.
"""

from __future__ import annotations

import html
import json
import secrets
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from chart_support import (
    CHART,
    INSTANCE,
    bootstrap_hello,
    dashboard_identity,
    helm,
    image_values,
    kubectl_json,
    new_namespace,
    port_forward,
    ready,
    release_in,
    unique,
    wait_finished,
)
from kitaru.client import KitaruClient
from kitaru.client.connection import Impersonation, resolve_connection
from kubernetes import client
from support import (
    CLUSTER_DIR,
    KUBECONFIG,
    create,
    deployment,
    get,
    kubectl,
    route,
    wait_for,
)
from ui_support import (
    Visitor,
    auth_proxy_binary,
    basic_auth,
    connection_env,
    csrf_token,
    dashboard,
    htpasswd,
    oauth2_proxy,
    prepared_auth_proxy,
)

pytestmark = pytest.mark.usefixtures("crds_installed")

FLOW = "research_agent"
INVOKE = f"/flows/{FLOW}/invoke?tag=default"
IMAGE = "registry.invalid/kitaru/runner:never-pulled"
PASSWORDS = {name: f"{name}-{secrets.token_hex(8)}" for name in ("alice", "bob", "carol", "dave")}
# The users the dashboard may act as (ui.auth.users): dave is not one of them.
ACTS_AS = "{alice,bob,carol}"
ROLES = {"alice": "viewer", "bob": "consumer", "carol": "producer", "dave": "producer"}


def signed_in(name: str, url: str, **headers: str) -> Visitor:
    return Visitor(url, {**basic_auth(name, PASSWORDS[name]), **headers})


def text(body: str) -> str:
    return html.unescape(body)


def served(body: str) -> bool:
    """Whether `body` is a page of the dashboard (not the proxy's sign-in page or a refusal)."""
    return 'class="brand"' in body


def runs_in(namespace: str) -> list[str]:
    return kubectl("get", "flowinvocations", "-o", "name", namespace=namespace).stdout.split()


def can(account: str, verb: str, resource: str, namespace: str) -> bool:
    answer = kubectl(
        "auth", "can-i", verb, resource, f"--as={account}", "-n", namespace, check=False
    )
    return answer.stdout.strip() == "yes"


def bind_people(namespace: str, roles: str, account: str) -> None:
    """alice, bob, carol and dave to their roles; the dashboard's account to consumer."""
    for name, role in ROLES.items():
        kubectl(
            "create",
            "rolebinding",
            f"{name}-{role}",
            f"--clusterrole={roles}-{role}",
            f"--user={name}",
            namespace=namespace,
        )
    kubectl(
        "create",
        "rolebinding",
        "dashboard-could-invoke",
        f"--clusterrole={roles}-consumer",
        f"--serviceaccount={namespace}:{account}",
        namespace=namespace,
    )


# --- behind an external proxy (host processes) -----------------------------------------


@dataclass(frozen=True)
class Site:
    proxy: str  # where people go: oauth2-proxy
    dashboard: str  # the dashboard itself, past the proxy
    secret: str  # what the proxy sends in X-Kitaru-Proxy-Secret
    namespace: str
    account: str  # system:serviceaccount:NS:NAME of the dashboard


def proxy_config(port: int, upstream: str, secret_file: Path) -> dict[str, Any]:
    """oauth2-proxy's configuration: sign-in by password, then the user, the groups and
    the shared secret injected for the upstream (any client value of them replaced)."""
    claim = lambda name: {"claimSource": {"claim": name}}  # noqa: E731
    return {
        "server": {"bindAddress": f"127.0.0.1:{port}"},
        "upstreamConfig": {"upstreams": [{"id": "dashboard", "path": "/", "uri": f"{upstream}/"}]},
        "injectRequestHeaders": [
            {"name": "X-Forwarded-User", "values": [claim("user")]},
            {"name": "X-Forwarded-Groups", "values": [claim("groups")]},
            {
                "name": "X-Kitaru-Proxy-Secret",
                "values": [{"secretSource": {"fromFile": str(secret_file)}}],
            },
        ],
        # No identity provider is contacted: people sign in with htpasswd passwords.
        "providers": [
            {"id": "passwords", "provider": "google", "clientID": "-", "clientSecret": "-"}
        ],
    }


@contextmanager
def applied(objects: list[dict[str, Any]]) -> Iterator[None]:
    """`objects` applied, and deleted afterwards (cluster-scoped ones included)."""
    manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    kubectl("apply", "-f", "-", input=manifest)
    try:
        yield
    finally:
        kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false", input=manifest)


@pytest.fixture(scope="module")
def site(roles: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The module's project, people and dashboard ServiceAccount (the chart's RBAC for it,
    external mode), `kitaru ui` with that account's token, and oauth2-proxy in front."""
    workdir = tmp_path_factory.mktemp("external-proxy")
    secret = secrets.token_hex(32)
    secret_file = workdir / "proxy-secret"
    secret_file.write_text(secret)  # oauth2-proxy sends the file as it is: no newline
    (workdir / "htpasswd").write_text(htpasswd(PASSWORDS))
    with ExitStack() as stack:
        namespace = stack.enter_context(new_namespace("t-dashboard-auth"))
        create(deployment(FLOW, 1, image=IMAGE), namespace)
        create(route(FLOW, "default", 1), namespace)
        identity = dashboard_identity(
            unique("kt-ui"),
            namespace,
            *("--set", "ui.enabled=true", "--set", f"ui.auth.users={ACTS_AS}"),
            *("--set", "ui.auth.mode=external", "--set", "ui.auth.external.secretName=-"),
            *("--set", "ui.networkPolicy.enabled=false"),
        )
        stack.enter_context(applied(identity))
        (account,) = [d["metadata"]["name"] for d in identity if d["kind"] == "ServiceAccount"]
        bind_people(namespace, roles, account)
        token = kubectl("create", "token", account, "--duration=30m", namespace=namespace)
        env = connection_env(namespace, token.stdout.strip(), workdir)
        args = ("--auth-proxy", "--proxy-secret-file", str(secret_file))
        dashboard_url = stack.enter_context(dashboard(workdir, env, workdir / "ui.log", *args))

        def proxy_args(port: int) -> list[str]:
            config_file = workdir / f"proxy-{port}.json"  # YAML: JSON is YAML
            config_file.write_text(json.dumps(proxy_config(port, dashboard_url, secret_file)))
            return [
                f"--alpha-config={config_file}",
                f"--htpasswd-file={workdir / 'htpasswd'}",
                f"--cookie-secret={secrets.token_hex(16)}",
                "--email-domain=*",
                "--cookie-secure=false",
            ]

        proxy_url = stack.enter_context(
            oauth2_proxy(auth_proxy_binary(), workdir, proxy_args, workdir / "proxy.log")
        )
        yield Site(
            proxy=proxy_url,
            dashboard=dashboard_url,
            secret=secret,
            namespace=namespace,
            account=f"system:serviceaccount:{namespace}:{account}",
        )


def test_without_a_sign_in_nothing_is_served(site: Site) -> None:
    """Through the proxy without a password: its sign-in page (401 to a script), nothing
    of the dashboard. At the dashboard itself, past the proxy: 401 — it never answers
    with its own role."""
    anonymous = Visitor(site.proxy)
    page = anonymous.get(f"/flows/{FLOW}")
    assert page.status == 403 and "Sign in" in page.body, page
    assert not served(page.body)
    assert anonymous.get("/", {"Accept": "application/json"}).status == 401
    wrong = Visitor(site.proxy, basic_auth("alice", "not-her-password")).get(f"/flows/{FLOW}")
    assert wrong.status == 403 and not served(wrong.body)
    for path in ("/", f"/flows/{FLOW}", INVOKE, "/runs"):
        direct = Visitor(site.dashboard).get(path)
        assert direct.status == 401 and not served(direct.body), (path, direct)


def test_alice_a_viewer_cannot_invoke_though_the_dashboard_could(site: Site) -> None:
    assert can(site.account, "create", "flowinvocations", site.namespace), "the exploit's premise"
    before = runs_in(site.namespace)
    alice = signed_in("alice", site.proxy)
    flow = alice.get(f"/flows/{FLOW}")
    assert flow.status == 200, flow
    assert "signed in as <b>alice</b>" in flow.body
    assert 'data-tag="default"' in flow.body, "a viewer reads the routes"
    assert 'class="invoke"' not in flow.body and 'id="tag-form"' not in flow.body
    form = alice.get(INVOKE)
    assert 'id="cannot-invoke"' in form.body and 'id="invoke-submit"' not in form.body
    # Without the button, the request itself: the API server refuses it, as alice.
    answer = alice.post(INVOKE, {"csrf_token": csrf_token(form.body)})
    assert answer.status == 403, answer
    assert 'User "alice" cannot create resource "flowinvocations"' in text(answer.body)
    assert runs_in(site.namespace) == before


def test_bob_invokes_and_carol_moves_a_tag_each_as_themselves(site: Site) -> None:
    before = runs_in(site.namespace)
    bob = signed_in("bob", site.proxy)
    flow = bob.get(f"/flows/{FLOW}").body
    assert f'href="{INVOKE}"' in flow.replace("&amp;", "&"), "a consumer may invoke"
    assert 'id="tag-form"' not in flow, "but not move tags"
    answer = bob.post(INVOKE, {"csrf_token": csrf_token(bob.get(INVOKE).body)})
    assert answer.status == 303, answer
    exec_id = answer.headers["location"].rsplit("/", 1)[1]
    assert runs_in(site.namespace) == sorted([*before, f"flowinvocation.kitaru.dev/{exec_id}"])

    carol = signed_in("carol", site.proxy)
    page = carol.get(f"/flows/{FLOW}")
    assert 'id="tag-form"' in page.body, "a producer may move tags"
    fields = {"csrf_token": csrf_token(page.body), "action": "tag", "tag": "canary"}
    answer = carol.post(f"/flows/{FLOW}/routes", {**fields, "version": "1", "exclusive": "on"})
    assert answer.status == 303, answer
    canary = get("flowroute", "research-agent.canary", site.namespace)
    assert canary is not None and canary["spec"]["versions"] == [1]
    # The admission policy kitaru-route-changed-by admits this stamp only from carol.
    assert canary["metadata"]["annotations"]["kitaru.dev/changed-by"] == "carol"


def test_forged_identity_headers_are_ignored(site: Site) -> None:
    before = runs_in(site.namespace)
    # Signed in as alice, naming bob (and a guessed proxy secret): the proxy replaces them.
    forged = {
        "X-Forwarded-User": "bob",
        "X-Forwarded-Groups": "system:masters",
        "X-Kitaru-Proxy-Secret": "guessed",
    }
    alice = signed_in("alice", site.proxy, **forged)
    page = alice.get(f"/flows/{FLOW}")
    assert "signed in as <b>alice</b>" in page.body and 'class="invoke"' not in page.body
    answer = alice.post(INVOKE, {"csrf_token": csrf_token(alice.get(INVOKE).body)})
    assert answer.status == 403 and 'User "alice"' in text(answer.body)

    # Past the proxy, straight to the dashboard: without its secret no name is believed.
    for headers in ({"X-Forwarded-User": "bob"}, forged):
        direct = Visitor(site.dashboard, headers).get(f"/flows/{FLOW}")
        assert direct.status == 401 and not served(direct.body), (headers, direct)

    # Even with the secret (a subverted proxy): never a Kubernetes system user or group.
    proxy_secret = {"X-Kitaru-Proxy-Secret": site.secret}
    admin = Visitor(site.dashboard, {**proxy_secret, "X-Forwarded-User": "system:admin"})
    assert admin.get(f"/flows/{FLOW}").status == 403
    masters = Visitor(
        site.dashboard,
        {**proxy_secret, "X-Forwarded-User": "alice", "X-Forwarded-Groups": "system:masters"},
    )
    page = masters.get(f"/flows/{FLOW}")
    assert page.status == 200 and 'class="invoke"' not in page.body, "still only alice"
    assert runs_in(site.namespace) == before


def test_a_person_the_dashboard_may_not_act_as_gets_nothing(site: Site) -> None:
    """dave signs in and is a producer, but is not in ui.auth.users: the API server
    refuses the dashboard's impersonation of him, so it shows and does nothing."""
    dave = signed_in("dave", site.proxy)
    page = dave.get(f"/flows/{FLOW}")
    assert page.status == 403, page
    assert 'cannot impersonate resource "users"' in text(page.body)
    assert 'data-tag="default"' not in page.body


def test_impersonated_groups_reach_the_api_server(site: Site) -> None:
    """The client sends one Impersonate-Group header per group (the Kubernetes client
    keeps one value per header name): the API server sees every group."""
    admin = resolve_connection({"KUBECONFIG": str(KUBECONFIG), "KITARU_PROJECT": site.namespace})
    who = Impersonation(user="erin", groups=("team-a", "team-b"))
    kube = KitaruClient(replace(admin, impersonate=who)).kube
    review = client.AuthenticationV1Api(kube.api_client).create_self_subject_review(
        client.V1SelfSubjectReview()
    )
    user = review.status.user_info
    assert user.username == "erin"
    assert {"team-a", "team-b", "system:authenticated"} <= set(user.groups)


# --- the chart: the dashboard and its oauth2-proxy sidecar in one pod -------------------


def dashboard_pod(namespace: str, release: str) -> dict[str, Any] | None:
    pods = kubectl_json(
        "get",
        "pods",
        "-n",
        namespace,
        "-l",
        f"app.kubernetes.io/name=kitaru-dashboard,{INSTANCE}={release}",
    )["items"]
    return pods[0] if len(pods) == 1 and ready(pods[0]) else None


def refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


def test_the_charts_dashboard_behind_its_oauth2_proxy_sidecar(
    cluster: object, namespace: str
) -> None:
    """ui.enabled: the dashboard and oauth2-proxy in one restricted pod. Only the proxy
    is reachable; people act as themselves; a run bob starts from the form completes."""
    image = prepared_auth_proxy(CLUSTER_DIR)["image"]
    repository, digest = image.split("@")
    kubectl(
        "create",
        "secret",
        "generic",
        "proxy-settings",
        f"--from-literal=OAUTH2_PROXY_COOKIE_SECRET={secrets.token_hex(16)}",
        "--from-literal=OAUTH2_PROXY_CLIENT_ID=-",
        "--from-literal=OAUTH2_PROXY_CLIENT_SECRET=-",
        "--from-literal=OAUTH2_PROXY_EMAIL_DOMAINS=*",
        namespace=namespace,
    )
    kubectl(
        "create",
        "secret",
        "generic",
        "passwords",
        f"--from-literal=htpasswd={htpasswd(PASSWORDS)}",
        namespace=namespace,
    )
    with release_in(namespace) as release:
        helm(
            "install",
            release,
            str(CHART),
            "--namespace",
            namespace,
            *image_values(),
            "--set",
            "ui.enabled=true",
            "--set",
            "ui.auth.users={alice,bob}",
            "--set",
            f"ui.auth.sidecar.image.repository={repository}",
            "--set",
            f"ui.auth.sidecar.image.digest={digest}",
            "--set",
            "ui.auth.sidecar.secretName=proxy-settings",
            "--set",
            "ui.auth.sidecar.htpasswdSecretName=passwords",
            "--wait",
            "--timeout=180s",
        )
        account = f"{release}-kitaru-operator-dashboard"
        # Its account: impersonate the listed users, nothing of its own.
        sa = f"system:serviceaccount:{namespace}:{account}"
        assert not can(sa, "get", "flowroutes", namespace)
        assert can(sa, "impersonate", "users/alice", namespace)
        assert not can(sa, "impersonate", "users/dave", namespace)
        assert not can(sa, "impersonate", "groups/system:masters", namespace)
        bind_people(namespace, release, account)
        pod = wait_for(
            lambda: dashboard_pod(namespace, release),
            timeout=120,
            interval=0.5,
            message="the dashboard pod (dashboard and proxy) to be Ready",
        )
        assert [c["name"] for c in pod["spec"]["containers"]] == ["dashboard", "auth-proxy"]
        bootstrap_hello(namespace)

        # Nothing but the proxy listens on the pod's address: the dashboard is on loopback.
        pod_ip = pod["status"]["podIP"]
        assert refused(pod_ip, 8080)

        with port_forward(namespace, f"svc/{account}", 80) as url:
            anonymous = Visitor(url).get("/flows/hello")
            assert anonymous.status == 403 and "Sign in" in anonymous.body
            assert not served(anonymous.body)

            alice = signed_in("alice", url, **{"X-Forwarded-User": "bob"})
            flow = alice.get("/flows/hello")
            assert "signed in as <b>alice</b>" in flow.body, flow
            assert 'data-tag="default"' in flow.body and 'class="invoke"' not in flow.body
            form = alice.get("/flows/hello/invoke?tag=default")
            token = csrf_token(form.body)
            answer = alice.post("/flows/hello/invoke?tag=default", {"csrf_token": token})
            assert answer.status == 403
            assert 'User "alice" cannot create resource "flowinvocations"' in text(answer.body)

            bob = signed_in("bob", url)
            flow = bob.get("/flows/hello").body
            assert "/flows/hello/invoke?tag=default" in flow.replace("&amp;", "&")
            assert 'id="tag-form"' not in flow, "a consumer may not move tags"
            form = bob.get("/flows/hello/invoke?tag=default")
            answer = bob.post(
                "/flows/hello/invoke?tag=default",
                {"csrf_token": csrf_token(form.body), "name": "dashboard"},
            )
            assert answer.status == 303, answer
            exec_id = answer.headers["location"].rsplit("/", 1)[1]
            done = wait_finished(namespace, exec_id)
            assert done["status"]["phase"] == "Completed", done["status"]
            assert done["status"]["result"] == "hello dashboard"
            assert "hello dashboard" in bob.get(f"/runs/{exec_id}").body

        # The NetworkPolicy opens the proxy's port of the dashboard's pods, nothing else.
        policy = kubectl_json("get", "networkpolicy", account, "-n", namespace)["spec"]
        assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        assert policy["ingress"] == [{"ports": [{"port": 4180, "protocol": "TCP"}]}]
        service = kubectl_json("get", "service", account, "-n", namespace)["spec"]
        assert service["type"] == "ClusterIP"
