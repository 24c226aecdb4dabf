"""Session-wide fixtures: the local cluster, an admin API client, a namespace per test,
the operator as a process (`running_operator`, shared by a module's tests) and the
chart's roles (`roles`, `operator_account`).

Tests under tests/api, tests/e2e, tests/security, tests/cluster, tests/chaos and
tests/gitops are marked `cluster`. If the cluster cannot be started they fail (never
skip): run the unit tier alone with `make test-unit`.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import kubernetes
import pytest
from chart_support import render_operator_rbac, render_user_roles, unique
from kitaru.core.names import API_VERSION, GROUP, INVOCATIONS, SCHEDULES
from support import (
    CLUSTER_DIR,
    KUBECONFIG,
    REPO,
    TEST_CLUSTER_ENV,
    TEST_NAMESPACE_LABELS,
    Cluster,
    OperatorProcess,
    create,
    deployment,
    kubectl,
    localnode,
    route,
    wait_for,
)

CLUSTER_TIERS = {"api", "e2e", "security", "cluster", "chaos", "gitops"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).parent
    for item in items:
        try:
            tier = item.path.relative_to(tests_dir).parts[0]
        except ValueError:
            continue
        if tier in CLUSTER_TIERS:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    """The local cluster, started when it is not up; one named by KITARU_TEST_CLUSTER_DIR
    must already be running (the tests never start or stop it)."""
    if localnode("cluster", "status").returncode != 0:
        if os.environ.get(TEST_CLUSTER_ENV):
            pytest.fail(f"{TEST_CLUSTER_ENV}={CLUSTER_DIR}: no cluster runs there", pytrace=False)
        proc = localnode("cluster", "up")
        if proc.returncode != 0:
            why = f"the local cluster could not be started:\n{proc.stdout}{proc.stderr}"
            pytest.fail(why, pytrace=False)
    cfg = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(KUBECONFIG), client_configuration=cfg)
    return Cluster(kubeconfig=KUBECONFIG, api_url=cfg.host)


@pytest.fixture(autouse=True)
def _needs_cluster(request: pytest.FixtureRequest) -> None:
    """Tests marked `cluster` get the cluster (or its skip/failure) even if they do not
    ask for it."""
    if request.node.get_closest_marker("cluster"):
        request.getfixturevalue("cluster")


@pytest.fixture(scope="session")
def k8s(cluster: Cluster) -> kubernetes.client.ApiClient:
    """An API client with the admin kubeconfig."""
    return kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))


def _namespace_name(item: pytest.Item) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", item.name.lower()).strip("-")[:40].strip("-")
    return f"t-{stem}-{uuid.uuid4().hex[:6]}"


def _create_namespaces(core: kubernetes.client.CoreV1Api, *names: str) -> None:
    """Create test namespaces and wait for their `default` ServiceAccounts."""
    for name in names:
        core.create_namespace(
            kubernetes.client.V1Namespace(
                metadata=kubernetes.client.V1ObjectMeta(name=name, labels=TEST_NAMESPACE_LABELS)
            )
        )
    for name in names:
        wait_for(
            lambda n=name: core.read_namespaced_service_account("default", n),
            timeout=30,
            message=f"ServiceAccount {name}/default",
        )


# One shared operator watches at most this many namespaces: it holds a watch connection
# per kind and namespace (8) from its pool of 64, and the rest is its API calls' share
# (watching 9 namespaces, an operator was seen unable to make any call).
NAMESPACES_PER_OPERATOR = 4


@dataclass
class _SharedOperator:
    process: OperatorProcess
    namespaces: dict[str, str] = field(default_factory=dict)  # test node id -> namespace
    released: set[str] = field(default_factory=set)


class OperatorPool:
    """The operators a module's tests share (`running_operator`). The operator watches a
    fixed list of namespaces, so the pool makes the namespaces of the next tests that
    need one (in the order they run, NAMESPACES_PER_OPERATOR at a time) before starting
    it: every test still has a namespace of its own. A namespace outlives its test until
    its operator stops (an operator never sees a namespace of its own being deleted),
    its runs and schedules do not (`release`); once the operator stops, its log must hold
    no traceback, and its namespaces are deleted."""

    def __init__(
        self,
        tests: list[pytest.Item],
        core: kubernetes.client.CoreV1Api,
        log_dirs: pytest.TempPathFactory,
    ) -> None:
        self.tests = {test.nodeid: test for test in tests}  # in the order they run
        self.core, self.log_dirs = core, log_dirs
        self.custom = kubernetes.client.CustomObjectsApi(core.api_client)
        self.operators: list[_SharedOperator] = []
        self.of_test: dict[str, _SharedOperator] = {}

    def namespace_for(self, test: pytest.Item) -> str:
        """The test's namespace, watched by a running operator."""
        self.tests.setdefault(test.nodeid, test)
        if test.nodeid not in self.of_test:
            self._start_for(test.nodeid)
        return self.of_test[test.nodeid].namespaces[test.nodeid]

    def operator_for(self, test: pytest.Item) -> OperatorProcess:
        return self.of_test[test.nodeid].process

    def _start_for(self, nodeid: str) -> None:
        """Namespaces for this test and the next ones, and an operator watching them."""
        upcoming = [t for t in self.tests if t not in self.of_test]
        group = upcoming[upcoming.index(nodeid) :][:NAMESPACES_PER_OPERATOR]
        namespaces = {test: _namespace_name(self.tests[test]) for test in group}
        _create_namespaces(self.core, *namespaces.values())
        process = OperatorProcess(
            tuple(namespaces.values()), self.log_dirs.mktemp("operator"), resync_seconds=5
        )
        shared = _SharedOperator(process, namespaces)
        self.operators.append(shared)
        for test in group:
            self.of_test[test] = shared
        process.start()

    def release(self, test: pytest.Item) -> None:
        """The test is over; the last of an operator's tests stops it. Before that, what
        would keep the operator busy in the test's namespace is deleted: its runs (with
        their Jobs: held by a no-pods quota, the operator would retry their pods for the
        next tests) and schedules (their ticks)."""
        shared = self.of_test[test.nodeid]
        shared.released.add(test.nodeid)
        if shared.released == set(shared.namespaces):
            self._stop(shared)
            return
        namespace = shared.namespaces[test.nodeid]
        for plural in (SCHEDULES, INVOCATIONS):
            self.custom.delete_collection_namespaced_custom_object(
                GROUP, API_VERSION, namespace, plural, propagation_policy="Background"
            )

    def _stop(self, shared: _SharedOperator) -> None:
        if shared not in self.operators:
            return
        self.operators.remove(shared)
        shared.process.stop()
        for name in shared.namespaces.values():
            self.core.delete_namespace(name, propagation_policy="Background")
        log = shared.process.log()
        assert "Traceback" not in log, log

    def close(self) -> None:
        """The module is over: stop what tests that never ran left waiting."""
        for shared in list(self.operators):
            self._stop(shared)


@pytest.fixture(scope="module")
def operator_pool(
    request: pytest.FixtureRequest,
    k8s: kubernetes.client.ApiClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorPool]:
    """The module's shared operators, for the tests that use `running_operator`."""
    tests = [
        item
        for item in request.session.items
        if item.module is request.module and "running_operator" in item.fixturenames
    ]
    pool = OperatorPool(tests, kubernetes.client.CoreV1Api(k8s), tmp_path_factory)
    yield pool
    pool.close()


@pytest.fixture
def namespace(request: pytest.FixtureRequest, k8s: kubernetes.client.ApiClient) -> Iterator[str]:
    """A fresh namespace for one test (with its `default` ServiceAccount ready), deleted
    afterwards without waiting for the deletion to finish (a test with `running_operator`
    gets it from the module's `operator_pool`, which deletes it once its operator stops).
    Pod Security Admission enforces the `restricted` standard there, as it should in a
    production project: every pod the suite starts (the runs' Jobs included) must comply."""
    if "running_operator" in request.fixturenames:
        pool: OperatorPool = request.getfixturevalue("operator_pool")
        yield pool.namespace_for(request.node)
        pool.release(request.node)
        return
    name = _namespace_name(request.node)
    core = kubernetes.client.CoreV1Api(k8s)
    _create_namespaces(core, name)
    yield name
    core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def running_operator(
    namespace: str, request: pytest.FixtureRequest, operator_pool: OperatorPool
) -> Iterator[OperatorProcess]:
    """The operator (`python -m kitaru_operator`) watching the test's namespace, ready,
    shared with other tests of the module (`OperatorPool`): do not stop or kill it (a test
    that does starts an `OperatorProcess` of its own). A traceback it logs during the
    test fails the test."""
    operator = operator_pool.operator_for(request.node)
    seen = len(operator.log())
    yield operator
    logged = operator.log()[seen:]
    assert "Traceback" not in logged, logged


@pytest.fixture
def own_operator(
    namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """An operator of the test's own for its namespace, ready, for a test that stops,
    kills or restarts it; stopped afterwards, and a traceback in its log fails the test."""
    operator = OperatorProcess(namespace, tmp_path_factory.mktemp("operator"), resync_seconds=5)
    operator.start()
    yield operator
    operator.stop()
    assert "Traceback" not in operator.log(), operator.log()


@pytest.fixture(scope="module")
def roles(cluster: Cluster) -> Iterator[str]:
    """Apply the chart's producer/consumer/viewer ClusterRoles; yield their name prefix."""
    prefix = unique("kt-rbac")
    rendered = render_user_roles(prefix)
    kubectl("apply", "-f", "-", input=rendered)
    yield prefix
    kubectl("delete", "-f", "-", "--ignore-not-found", input=rendered, check=False)


@pytest.fixture
def operator_account(namespace: str) -> Iterator[str]:
    """The chart's operator ServiceAccount and RBAC, released into `namespace` and
    watching it; yields the ServiceAccount's name."""
    release = unique("kt-op")
    rendered = render_operator_rbac(release, namespace)
    kubectl("apply", "-f", "-", input=rendered)
    yield f"{release}-kitaru-operator"
    kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false", input=rendered, check=False)


CRDS = REPO / "crds"
CRD_NAMES = (
    "flowdeployments.kitaru.dev",
    "flowroutes.kitaru.dev",
    "flowinvocations.kitaru.dev",
    "flowhistories.kitaru.dev",
    "flowschedules.kitaru.dev",
    "flowpromotions.kitaru.dev",
)


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
    # The probe never runs: any image will do, also on a cluster without a node.
    probe_version = deployment("probe", 1, image="kitaru.local/probe:never-run")
    try:
        wait_for(
            lambda: create(probe_version, probe, check=False).returncode == 0,
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
            lambda: "never reused" in create(probe_version, probe, check=False).stderr,
            timeout=60,
            message="reused versions are denied",
        )
        yield
    finally:
        kubectl("delete", "namespace", probe, "--wait=false", check=False)
