"""The Helm chart rendered offline by the pinned helm: what each value produces and the
least-privilege RBAC (the chart's copies of crds/: tests/unit/test_crds_drift.py).

The tools tier: no cluster, but the pinned helm from `make build-cluster` (`make test`
builds it before pytest runs; the unit tier builds nothing).
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kitaru.core.tokens import CLIENT_RULES
from support import bin_dir

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kitaru-operator"
CRDS = REPO / "crds"
ADMISSION = "kitaru.dev_admission.yaml"


@functools.cache
def helm_binary() -> str:
    """The pinned helm; `make test` builds it (`make build-cluster`) before pytest runs."""
    return str(bin_dir() / "helm")


def render(*values: str, release: str = "kitaru", namespace: str = "kitaru-system") -> list[Any]:
    proc = subprocess.run(
        [helm_binary(), "template", release, str(CHART), "--namespace", namespace, *values],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def by_kind(docs: list[Any], kind: str) -> dict[str, Any]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def rules_allow(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r.get("apiGroups", [])
        and resource in r.get("resources", [])
        and verb in r.get("verbs", [])
        for r in rules
    )


# --- the operator Deployment ------------------------------------------------------


def test_replicas_and_retention_are_values() -> None:
    docs = render(
        "--set",
        "replicas=2",
        "--set",
        "retention.ttlSecondsAfterFinished=0",
        "--set",
        "retention.historyLimit=null",
    )
    (deployment,) = by_kind(docs, "Deployment").values()
    assert deployment["spec"]["replicas"] == 2
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--ttl-seconds-after-finished=0" in args  # 0 is a number: delete at once
    assert "--history-limit=none" in args


def test_operator_deployment_defaults() -> None:
    docs = render()
    (deployment,) = by_kind(docs, "Deployment").values()
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    # Leader election makes a rolling update safe: the new pod waits as a standby.
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/kitaru-k8s/operator:0.1.0"
    assert container["args"] == [
        "--namespace=kitaru-system",
        "--liveness=http://0.0.0.0:8081/healthz",
        "--metrics-port=8080",
        "--leader-elect",
        "--leader-elect-lease-seconds=15",
        "--ttl-seconds-after-finished=604800",
        "--history-limit=1000",
        "--resolve-deadline-seconds=60",
        "--default-runner-image=ghcr.io/kitaru-k8s/runner:0.1.0",
    ]
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}) for e in container["env"]}
    assert env["POD_NAME"] == {"fieldPath": "metadata.name"}
    assert env["POD_NAMESPACE"] == {"fieldPath": "metadata.namespace"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "healthz"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "metrics": 8080,
        "healthz": 8081,
    }
    assert container["resources"]["requests"] and container["resources"]["limits"]
    # Pod Security Standards "restricted".
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["serviceAccountName"] == "kitaru-kitaru-operator"
    labels = deployment["metadata"]["labels"]
    for key in ("name", "instance", "version", "managed-by"):
        assert f"app.kubernetes.io/{key}" in labels


@pytest.mark.parametrize(
    ("values", "args"),
    [
        (["--set", "watch.allNamespaces=true"], ["--all-namespaces"]),
        (["--set", "watch.namespaces={a,b}"], ["--namespace=a", "--namespace=b"]),
    ],
)
def test_watch_values_set_args_and_bindings(values: list[str], args: list[str]) -> None:
    docs = render(*values)
    (deployment,) = by_kind(docs, "Deployment").values()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][: len(args)] == args
    cluster_bindings = by_kind(docs, "ClusterRoleBinding")
    # The Lease's binding lives in the release namespace, whatever is watched.
    role_bindings = [
        d for d in docs if d["kind"] == "RoleBinding" and "leader" not in d["metadata"]["name"]
    ]
    if "--all-namespaces" in args:
        assert set(cluster_bindings) == {
            "kitaru-kitaru-operator-framework",
            "kitaru-kitaru-operator-application",
        }
        assert not role_bindings
    else:
        assert not cluster_bindings
        assert sorted(
            (b["metadata"]["namespace"], b["roleRef"]["name"]) for b in role_bindings
        ) == [
            ("a", "kitaru-kitaru-operator-application"),
            ("a", "kitaru-kitaru-operator-framework"),
            ("b", "kitaru-kitaru-operator-application"),
            ("b", "kitaru-kitaru-operator-framework"),
        ]


def test_image_digest_and_extra_args() -> None:
    digest = "sha256:" + "a" * 64
    docs = render("--set", f"image.digest={digest}", "--set", "extraArgs={--verbose}")
    (deployment,) = by_kind(docs, "Deployment").values()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"ghcr.io/kitaru-k8s/operator@{digest}"
    assert container["args"][-1] == "--verbose"


@pytest.mark.parametrize(
    ("values", "image"),
    [
        (["--set", "runner.image.tag=0.2.0-rc1"], "ghcr.io/kitaru-k8s/runner:0.2.0-rc1"),
        (
            [
                "--set",
                "runner.image.repository=registry.local:5000/kitaru/runner",
                "--set",
                "runner.image.digest=sha256:" + "c" * 64,
            ],
            "registry.local:5000/kitaru/runner@sha256:" + "c" * 64,
        ),
    ],
)
def test_the_runner_image_is_the_operators_default(values: list[str], image: str) -> None:
    """`runner.image` reaches the operator as the image of versions that name none."""
    (deployment,) = by_kind(render(*values), "Deployment").values()
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--default-runner-image={image}" in args


# --- RBAC -------------------------------------------------------------------------


def test_operator_rbac_is_least_privilege() -> None:
    docs = render()
    roles = by_kind(docs, "ClusterRole")
    assert set(roles) == {
        "kitaru-kitaru-operator-framework",
        "kitaru-kitaru-operator-application",
        "kitaru-producer",
        "kitaru-consumer",
        "kitaru-viewer",
        "kitaru-client",
    }
    framework = roles["kitaru-kitaru-operator-framework"]["rules"]
    application = roles["kitaru-kitaru-operator-application"]["rules"]
    all_rules = framework + application
    assert not any("*" in r.get("verbs", []) or "*" in r.get("resources", []) for r in all_rules)
    # kopf's cluster scanning is off in the operator: no CRD or namespace access.
    assert not any(
        {"customresourcedefinitions", "namespaces"} & set(r.get("resources", [])) for r in all_rules
    )
    assert rules_allow(framework, "", "events", "create")
    for status in (
        "flowdeployments/status",
        "flowroutes/status",
        "flowinvocations/status",
        "flowpromotions/status",
    ):
        assert rules_allow(application, "kitaru.dev", status, "update")
    assert rules_allow(application, "kitaru.dev", "flowpromotions", "watch")
    assert rules_allow(application, "batch", "jobs", "create")
    assert rules_allow(application, "", "pods", "watch")
    # It runs its Jobs itself (spec.managedBy): their pods and their status.
    assert rules_allow(application, "", "pods", "create")
    assert rules_allow(application, "", "pods", "patch")  # adopts the pod made beside its Job
    assert rules_allow(application, "batch", "jobs/status", "patch")  # a merge patch
    assert rules_allow(application, "kitaru.dev", "flowroutes", "patch")
    (lease_role,) = [d for d in by_kind(docs, "Role").values() if "leader" in d["metadata"]["name"]]
    assert lease_role["metadata"]["namespace"] == "kitaru-system"
    assert lease_role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        }
    ]
    # The operator never writes versions and never reads secrets, config maps or logs.
    for verb in ("create", "update", "patch", "delete"):
        assert not rules_allow(application, "kitaru.dev", "flowdeployments", verb)
    assert not any(
        {"secrets", "configmaps", "pods/log"} & set(r.get("resources", [])) for r in all_rules
    )


def test_user_roles_and_aggregation() -> None:
    roles = by_kind(render(), "ClusterRole")
    producer = roles["kitaru-producer"]
    consumer = roles["kitaru-consumer"]
    viewer = roles["kitaru-viewer"]
    group = "kitaru.dev"

    assert rules_allow(consumer["rules"], group, "flowinvocations", "create")
    for verb in ("create", "update", "patch", "delete"):
        assert not rules_allow(consumer["rules"], group, "flowdeployments", verb)
        assert not rules_allow(consumer["rules"], group, "flowroutes", verb)
        assert rules_allow(producer["rules"], group, "flowdeployments", verb)
        assert rules_allow(producer["rules"], group, "flowroutes", verb)
    assert rules_allow(producer["rules"], "", "configmaps", "create")
    # Who may move tags may ask the operator to move one later, and cancel that.
    for verb in ("create", "patch"):
        assert rules_allow(producer["rules"], group, "flowpromotions", verb)
        assert not rules_allow(consumer["rules"], group, "flowpromotions", verb)
    for plural in ("flowdeployments", "flowroutes", "flowinvocations", "flowpromotions"):
        assert rules_allow(viewer["rules"], group, plural, "list")
        assert all(set(r["verbs"]) <= {"get", "list", "watch"} for r in viewer["rules"])

    # Only producers may cancel anyone's run (cancel-any, asked by admission).
    assert rules_allow(producer["rules"], group, "flowinvocations", "cancel-any")
    assert not rules_allow(consumer["rules"], group, "flowinvocations", "cancel-any")
    # The client role is what `kitaru auth token` gives kitaru-client, never aggregated.
    client = roles["kitaru-client"]
    assert client["rules"] == [rule.wire() for rule in CLIENT_RULES]
    assert not any("aggregate" in k for k in client["metadata"]["labels"])

    aggregate = "rbac.authorization.k8s.io/aggregate-to-"
    assert producer["metadata"]["labels"][aggregate + "edit"] == "true"
    assert producer["metadata"]["labels"][aggregate + "admin"] == "true"
    assert viewer["metadata"]["labels"][aggregate + "view"] == "true"

    plain = by_kind(render("--set", "rbac.userRoles.aggregate=false"), "ClusterRole")
    assert not any(aggregate in k for k in plain["kitaru-producer"]["metadata"]["labels"])


def test_cluster_scoped_names_follow_the_release() -> None:
    docs = render(release="team-x")
    cluster_scoped = [
        d["metadata"]["name"]
        for d in docs
        if d["kind"].startswith("Cluster") or d["kind"].startswith("ValidatingAdmission")
    ]
    assert cluster_scoped
    assert all(name.startswith("team-x-") for name in cluster_scoped), cluster_scoped


# --- admission policies -------------------------------------------------------------


def test_admission_policies_are_release_owned_copies() -> None:
    generated = [d for d in yaml.safe_load_all((CRDS / ADMISSION).read_text()) if d]
    docs = render()
    rendered = [d for d in docs if d["kind"].startswith("ValidatingAdmissionPolicy")]
    assert len(rendered) == len(generated)
    policies = by_kind(docs, "ValidatingAdmissionPolicy")
    for original in generated:
        name = "kitaru-kitaru-operator-" + original["metadata"]["name"].removeprefix("kitaru-")
        (copy,) = [
            d for d in rendered if d["kind"] == original["kind"] and d["metadata"]["name"] == name
        ]
        if original["kind"] == "ValidatingAdmissionPolicy":
            assert copy["spec"] == original["spec"]
        else:
            assert copy["spec"]["policyName"] in policies
            assert {k: v for k, v in copy["spec"].items() if k != "policyName"} == {
                k: v for k, v in original["spec"].items() if k != "policyName"
            }
        assert copy["metadata"]["labels"]["app.kubernetes.io/instance"] == "kitaru"
    assert not [d for d in render("--set", "admission.enabled=false") if "Admission" in d["kind"]]


# --- metrics ---------------------------------------------------------------------------


def test_metrics_service_and_service_monitor() -> None:
    docs = render()
    assert "ServiceMonitor" not in {d["kind"] for d in docs}
    (service,) = by_kind(docs, "Service").values()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    monitored = render("--set", "metrics.serviceMonitor.enabled=true")
    (monitor,) = by_kind(monitored, "ServiceMonitor").values()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()


def test_schema_rejects_unknown_and_bad_values() -> None:
    bad_values = ("replicas=0", "image.pullPolicy=Sometimes", "metrics.port=0", "replica=2")
    dashboard = (
        "ui.port=0",
        "ui.invoke=true",  # the dashboard has no role of its own any more
        "ui.service.type=Ingress",
        "ui.service.type=NodePort",
        "ui.service.type=LoadBalancer",
        "ui.auth.mode=none",
        "ui.auth.users={system:admin}",
        "ui.auth.groups={system:masters}",
    )
    for bad in (*bad_values, *dashboard):
        proc = subprocess.run(
            [helm_binary(), "template", "x", str(CHART), "--set", bad],
            capture_output=True,
            text=True,
        )
        assert proc.returncode != 0, bad
        assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr


# --- the dashboard ------------------------------------------------------------------

OPERATOR = "kitaru-kitaru-operator"
DASHBOARD = f"{OPERATOR}-dashboard"
DASHBOARD_ACCOUNT = {"kind": "ServiceAccount", "name": DASHBOARD, "namespace": "kitaru-system"}


def test_dashboard_is_off_by_default() -> None:
    docs = render()
    assert not [d for d in docs if "dashboard" in d["metadata"]["name"]]


SIDECAR = [
    *("--set", "ui.enabled=true", "--set", "ui.auth.users={alice,bob}"),
    *("--set", "ui.auth.sidecar.secretName=proxy-settings"),
]
EXTERNAL = [
    *("--set", "ui.enabled=true", "--set", "ui.auth.users={alice,bob}"),
    *("--set", "ui.auth.mode=external", "--set", "ui.auth.external.secretName=proxy-secret"),
    *("--set-json", 'ui.networkPolicy.from=[{"podSelector":{"matchLabels":{"app":"proxy"}}}]'),
]


def render_error(*values: str) -> str:
    proc = subprocess.run(
        [helm_binary(), "template", "kitaru", str(CHART), *values], capture_output=True, text=True
    )
    assert proc.returncode != 0, values
    return proc.stderr


def test_dashboard_needs_its_people_and_its_proxy() -> None:
    """No default lets the dashboard act as anyone, or serve without a proxy."""
    assert "ui.auth.users: list the users" in render_error("--set", "ui.enabled=true")
    no_settings = ["--set", "ui.enabled=true", "--set", "ui.auth.users={alice}"]
    assert "ui.auth.sidecar.secretName" in render_error(*no_settings)
    external = [*no_settings, "--set", "ui.auth.mode=external"]
    assert "ui.auth.external.secretName" in render_error(*external)
    with_secret = [*external, "--set", "ui.auth.external.secretName=s"]
    assert "ui.networkPolicy.from: list your proxy's pods" in render_error(*with_secret)


def impersonation_rules(docs: list[Any]) -> list[dict[str, Any]]:
    role = by_kind(docs, "ClusterRole")[f"{DASHBOARD}-impersonate"]
    binding = by_kind(docs, "ClusterRoleBinding")[f"{DASHBOARD}-impersonate"]
    assert binding["roleRef"]["name"] == f"{DASHBOARD}-impersonate"
    assert binding["subjects"] == [DASHBOARD_ACCOUNT]
    rules: list[dict[str, Any]] = role["rules"]
    return rules


@pytest.mark.parametrize(
    ("values", "rules"),
    [
        (
            [],
            [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]}],
        ),
        (
            ["--set", "ui.auth.groups={team-a}"],
            [
                {"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]},
                {
                    "apiGroups": [""],
                    "resources": ["groups"],
                    "verbs": ["impersonate"],
                    "resourceNames": ["team-a"],
                },
            ],
        ),
    ],
)
def test_dashboard_may_only_impersonate_its_people(
    values: list[str], rules: list[dict[str, Any]]
) -> None:
    """Its ServiceAccount may impersonate the listed users (and groups), and nothing
    else: no RoleBinding gives it a role of its own."""
    listed = impersonation_rules(render(*SIDECAR, *values))
    users = {**rules[0], "resourceNames": ["alice", "bob"]}
    assert listed == [users, *rules[1:]]
    any_user = render(*SIDECAR, "--set", "ui.auth.anyUser=true", *values)
    assert impersonation_rules(any_user) == rules
    bindings = [
        *by_kind(any_user, "RoleBinding").values(),
        *by_kind(any_user, "ClusterRoleBinding").values(),
    ]
    of_dashboard = [b["roleRef"]["name"] for b in bindings if DASHBOARD_ACCOUNT in b["subjects"]]
    assert of_dashboard == [f"{DASHBOARD}-impersonate"]


def restricted(pod: dict[str, Any]) -> bool:
    """Pod Security `restricted` for the pod and every container."""
    return (
        pod["securityContext"]["runAsNonRoot"] is True
        and pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        and all(
            c["securityContext"]["allowPrivilegeEscalation"] is False
            and c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            for c in pod["containers"]
        )
    )


@pytest.mark.parametrize("project", ["kitaru-system", "team-a"])
def test_dashboard_behind_its_oauth2_proxy_sidecar(project: str) -> None:
    """The dashboard listens on loopback in the pod; oauth2-proxy beside it is the one
    open port (Service, probes, NetworkPolicy), and passes the user it signed in."""
    values = [] if project == "kitaru-system" else ["--set", f"ui.project={project}"]
    docs = render(*SIDECAR, *values)
    deployment = by_kind(docs, "Deployment")[DASHBOARD]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == DASHBOARD
    dashboard, proxy = pod["containers"]
    assert dashboard["command"][:8] == [
        "kitaru",
        "ui",
        "--in-cluster",
        "--host=127.0.0.1",
        "--port=8080",
        "--auth-proxy",
        "--user-header=X-Forwarded-User",
        "--groups-header=X-Forwarded-Groups",
    ]
    assert "--proxy-secret-file" not in " ".join(dashboard["command"])
    assert f"--allowed-host={DASHBOARD}.kitaru-system.svc" in dashboard["command"]
    assert "ports" not in dashboard
    assert {"name": "KITARU_PROJECT", "value": project} in dashboard["env"]
    operator = by_kind(docs, "Deployment")[OPERATOR]["spec"]["template"]["spec"]
    assert dashboard["image"] == operator["containers"][0]["image"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert dashboard[probe]["httpGet"] == {"path": "/healthz", "port": 4180}

    assert proxy["image"] == "quay.io/oauth2-proxy/oauth2-proxy:v7.15.3"
    assert proxy["args"][:5] == [
        "--http-address=0.0.0.0:4180",
        "--upstream=http://127.0.0.1:8080/",
        "--skip-auth-route=GET=^/healthz$",
        "--pass-user-headers=true",
        "--skip-auth-strip-headers=true",
    ]
    assert proxy["envFrom"] == [{"secretRef": {"name": "proxy-settings"}}]
    assert proxy["ports"] == [{"name": "auth", "containerPort": 4180, "protocol": "TCP"}]
    assert restricted(pod)

    (service,) = [
        s for s in by_kind(docs, "Service").values() if s["metadata"]["name"] == DASHBOARD
    ]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "auth", "protocol": "TCP"}
    ]
    policy = by_kind(docs, "NetworkPolicy")[DASHBOARD]["spec"]
    assert (
        policy["podSelector"]["matchLabels"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["ingress"] == [{"ports": [{"port": 4180, "protocol": "TCP"}]}]


def test_dashboard_behind_an_external_proxy() -> None:
    """The dashboard listens on the pod's address but believes only requests with the
    shared secret (a mounted Secret); the NetworkPolicy admits the proxy's pods only."""
    docs = render(*EXTERNAL, "--set", "ui.allowedHosts={kitaru.example.com}")
    pod = by_kind(docs, "Deployment")[DASHBOARD]["spec"]["template"]["spec"]
    (dashboard,) = pod["containers"]
    command = dashboard["command"]
    assert "--host=0.0.0.0" in command and "--auth-proxy" in command
    assert "--proxy-secret-file=/etc/kitaru-proxy/proxy-secret" in command
    assert "--allowed-host=kitaru.example.com" in command
    assert {
        "name": "proxy-secret",
        "mountPath": "/etc/kitaru-proxy",
        "readOnly": True,
    } in dashboard["volumeMounts"]
    assert {
        "name": "proxy-secret",
        "secret": {
            "secretName": "proxy-secret",
            "items": [{"key": "proxy-secret", "path": "proxy-secret"}],
        },
    } in pod["volumes"]
    assert dashboard["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert restricted(pod)
    service = by_kind(docs, "Service")[DASHBOARD]["spec"]
    assert service["ports"][0]["targetPort"] == "http"
    policy = by_kind(docs, "NetworkPolicy")[DASHBOARD]["spec"]
    assert policy["ingress"] == [
        {
            "ports": [{"port": 8080, "protocol": "TCP"}],
            "from": [{"podSelector": {"matchLabels": {"app": "proxy"}}}],
        }
    ]


def test_dashboard_service_selects_only_the_dashboard() -> None:
    docs = render(*SIDECAR)
    services = by_kind(docs, "Service")
    deployments = by_kind(docs, "Deployment")
    dashboard_pods = deployments[DASHBOARD]["spec"]["template"]["metadata"]["labels"]
    operator_pods = deployments[OPERATOR]["spec"]["template"]["metadata"]["labels"]
    selector = services[DASHBOARD]["spec"]["selector"]
    assert selector.items() <= dashboard_pods.items()
    assert not selector.items() <= operator_pods.items()
    metrics = services[f"{OPERATOR}-metrics"]["spec"]["selector"]
    assert not metrics.items() <= dashboard_pods.items()


# --- the store ------------------------------------------------------------------------

STORE = f"{OPERATOR}-store"
DIGEST = "sha256:" + "d" * 64


def operator_env(docs: list[Any]) -> dict[str, Any]:
    container = by_kind(docs, "Deployment")[OPERATOR]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_no_store_by_default() -> None:
    docs = render()
    assert not [d for d in docs if "store" in d["metadata"]["name"]]
    assert not [name for name in operator_env(docs) if name.startswith("KITARU_STORE_")]


def test_an_external_store_is_the_operators_environment() -> None:
    docs = render(
        "--set",
        "store.endpoint=https://s3.eu-west-1.amazonaws.com",
        "--set",
        "store.bucket=team-runs",
        "--set",
        "store.prefix=prod/",
        "--set",
        "store.region=eu-west-1",
        "--set",
        "store.secretRef=s3-credentials",
    )
    assert not [d for d in docs if "store" in d["metadata"]["name"]]
    env = operator_env(docs)
    assert {k: v for k, v in env.items() if k.startswith("KITARU_STORE_")} == {
        "KITARU_STORE_ENDPOINT": "https://s3.eu-west-1.amazonaws.com",
        "KITARU_STORE_BUCKET": "team-runs",
        "KITARU_STORE_PREFIX": "prod/",
        "KITARU_STORE_REGION": "eu-west-1",
        # Credentials only by reference: never a value in the manifest.
        "KITARU_STORE_ACCESS_KEY_ID": {
            "secretKeyRef": {"name": "s3-credentials", "key": "AWS_ACCESS_KEY_ID"}
        },
        "KITARU_STORE_SECRET_ACCESS_KEY": {
            "secretKeyRef": {"name": "s3-credentials", "key": "AWS_SECRET_ACCESS_KEY"}
        },
    }
    # Without a Secret, the client's default credential chain (IRSA, workload identity).
    keyless = operator_env(render("--set", "store.endpoint=https://storage.googleapis.com"))
    assert "KITARU_STORE_ENDPOINT" in keyless
    assert "KITARU_STORE_ACCESS_KEY_ID" not in keyless


def test_deploy_runs_versitygw_on_a_claim_with_generated_credentials() -> None:
    docs = render("--set", "store.deploy=true")
    deployment = by_kind(docs, "Deployment")[STORE]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # one writer on RWO
    pod = deployment["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (container,) = pod["containers"]
    assert init["command"] == ["mkdir", "-p", "/data/kitaru"]  # the bucket
    assert container["image"] == init["image"] == "docker.io/versity/versitygw:v1.8.0"
    assert container["args"] == ["--port", ":7070", "--health", "/health", "posix", "/data"]
    secret = f"{STORE}-credentials"
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env == {
        "ROOT_ACCESS_KEY_ID": {"secretKeyRef": {"name": secret, "key": "AWS_ACCESS_KEY_ID"}},
        "ROOT_SECRET_ACCESS_KEY": {
            "secretKeyRef": {"name": secret, "key": "AWS_SECRET_ACCESS_KEY"}
        },
        "VGW_REGION": "us-east-1",
    }
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "s3"}
    assert pod["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": STORE}}]
    assert pod["automountServiceAccountToken"] is False
    # Pod Security `restricted`, like the operator.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in (init, container):
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert c["securityContext"]["readOnlyRootFilesystem"] is True

    claim = by_kind(docs, "PersistentVolumeClaim")[STORE]["spec"]
    assert claim == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "10Gi"}},
    }  # the default StorageClass
    assert set(by_kind(docs, "Secret")[secret]["data"]) == {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    }
    service = by_kind(docs, "Service")[STORE]["spec"]
    assert service["type"] == "ClusterIP"
    assert service["ports"] == [{"name": "s3", "port": 7070, "targetPort": "s3", "protocol": "TCP"}]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    operator_pods = by_kind(docs, "Deployment")[OPERATOR]["spec"]["template"]["metadata"]
    assert not service["selector"].items() <= operator_pods["labels"].items()

    env = operator_env(docs)
    assert env["KITARU_STORE_ENDPOINT"] == f"http://{STORE}.kitaru-system.svc:7070"
    assert env["KITARU_STORE_SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": secret, "key": "AWS_SECRET_ACCESS_KEY"}
    }


def test_deploy_with_a_secret_ref_makes_no_secret() -> None:
    docs = render("--set", "store.deploy=true", "--set", "store.secretRef=mine")
    assert "Secret" not in {d["kind"] for d in docs}
    container = by_kind(docs, "Deployment")[STORE]["spec"]["template"]["spec"]["containers"][0]
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "mine"


def test_the_local_cluster_runs_the_charts_store_template() -> None:
    """`cluster up` renders this very template with its values: the claim binds the
    local volume it makes, the Service is a NodePort on the node's address."""
    from kitaru_localnode import store
    from kitaru_localnode.images import BuiltImage

    image = BuiltImage(ref="10.244.0.1:5001/kitaru-k8s/versitygw:v1.8.0", digest=DIGEST)
    values = store.chart_values(image)
    env = {"PATH": "/usr/bin:/bin", "HELM_CACHE_HOME": "/tmp/kitaru-helm/cache"}
    docs = store.render_chart(Path(helm_binary()), CHART, values, env)
    assert sorted(d["kind"] for d in docs) == ["Deployment", "PersistentVolumeClaim", "Service"]
    claim = by_kind(docs, "PersistentVolumeClaim")[store.NAME]
    assert claim["metadata"]["namespace"] == store.NAMESPACE
    assert claim["spec"]["storageClassName"] == ""
    assert claim["spec"]["volumeName"] == store.NAME
    service = by_kind(docs, "Service")[store.NAME]["spec"]
    assert (service["type"], service["ports"][0]["nodePort"]) == ("NodePort", store.NODE_PORT)
    pod = by_kind(docs, "Deployment")[store.NAME]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == f"10.244.0.1:5001/kitaru-k8s/versitygw@{DIGEST}"
    assert pod["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"] == store.SECRET


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["store.secretRef=s3"], "store.secretRef names credentials, but no store is configured"),
        (["store.bucket=Runs_1"], "values don't meet the specifications of the schema"),
        (["store.endpoint=s3.amazonaws.com"], "values don't meet the specifications of the schema"),
        (["store.prefix=/abs"], "values don't meet the specifications of the schema"),
        (["store.deploy=yes"], "values don't meet the specifications of the schema"),
        (["store.image.digest=latest"], "values don't meet the specifications of the schema"),
    ],
)
def test_bad_store_values_fail_clearly(values: list[str], message: str) -> None:
    args = [a for v in values for a in ("--set", v)]
    proc = subprocess.run(
        [helm_binary(), "template", "x", str(CHART), *args], capture_output=True, text=True
    )
    assert proc.returncode != 0, values
    assert message in proc.stderr, proc.stderr
