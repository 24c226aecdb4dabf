"""The bad-input catalog (docs/bad-inputs.md): malformed requests through the CLI, the
SDK, the MCP server and kubectl, each answered with an error that names what to fix, and
nothing half-created: the namespace holds exactly what it held before.

The CLI cases run in this process (click's CliRunner on `kitaru.cli.main`, in the
project directory with the user's environment) and the MCP cases against the server
built in this process over the mcp package's in-memory streams: what each case proves is
the answer to a request, not the start of an executable. A sample of them
(`SUBPROCESS_SAMPLE`) also runs as real `kitaru` and `kitaru mcp` processes, which proves
the wiring (entry point, exit code, stderr) the in-process runs stand in for. kubectl
runs as itself. "The namespace holds what it held" compares each case's snapshot with
the one taken after the previous case (`Catalog.unchanged`): nothing else writes to the
namespace's specs meanwhile, so one snapshot per case proves what two did.

One project is set up per module (the operator running): research_agent v1 (`default`),
v2 (`canary`, exclusive), `benchmark` shared by both, `ab` split 50/50 between them,
`nightly` moved from v3 to v1, and v3 built and deleted again; one execution started with
idempotency key `order-1`.
Every case id is a row of docs/bad-inputs.md and the other way round.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import kubernetes
import pytest
from cli_support import (
    FLOWS_AND_MORE,
    InProcessKitaru,
    Kitaru,
    mcp_in_process,
    mcp_session,
    new_project,
)
from kitaru.client import KitaruClient
from kitaru.client.connection import resolve_connection
from kitaru.client.errors import KitaruError
from kitaru.client.source import load_target
from kitaru.core.names import API_VERSION, DEPLOYMENTS, GROUP, INVOCATIONS, ROUTES, SCHEDULES
from kitaru.core.payloads import DECODE_RECURSION_LIMIT
from kitaru.core.promotion import PROMOTIONS
from support import (
    REPO,
    TEST_NAMESPACE_LABELS,
    OperatorProcess,
    kubectl,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("crds_installed")

FLOW = "research_agent"
CATALOG_DOC = REPO / "docs" / "bad-inputs.md"
DEPLOY = f'deploy flows/research.py:{FLOW} --input \'{{"topic": "t"}}\''

MIB = 1024 * 1024
HUGE = {"topic": "a" * (2 * MIB)}  # over etcd's 1.5 MiB request limit
LARGE = {"topic": "a" * (100 * 1024)}  # under etcd's, over what a run's environment holds
DEEP = {"topic": json.loads("[" * 65 + "]" * 65)}  # 66 levels: more than the 64 allowed
HOSTILE_TAG = "\x1b]0;pwned\x07\x1b[2J"
KEY = "order-1"  # the idempotency key of the set-up's one keyed execution
KEY_REUSED = (
    f"idempotency key '{KEY}' of flow '{FLOW}' was used within 24h with a different request"
)

# A second flow for the schema-compatibility guard: v1 (`default`) takes a string topic,
# v2 (built, untagged) an integer one, so v2 would break v1's callers.
COMPAT = "compat_agent"
COMPAT_V1 = f"""from kitaru import flow


@flow
def {COMPAT}(topic: str) -> str:
    return topic
"""
COMPAT_V2 = COMPAT_V1.replace("topic: str", "topic: int")
TOPIC_RETYPED = "input 'topic': type string → integer"


# Projects inside the catalog's (each with its own .kitaru/, so shipped on its own), each
# holding one file that cannot be shipped.
NESTED_PROJECTS: dict[str, Callable[[Path], object]] = {
    "linked": lambda p: (p / "leak").symlink_to("/etc/hostname"),
    "oddnames": lambda p: (p / "notes copy.txt").write_text("x"),
}


def nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@dataclass
class Catalog:
    """The module's project: its namespace, the CLI in a `kitaru init` directory (run in
    this process; `executable` is the same CLI as a subprocess), an SDK client on the same
    connection, and the admin's view of what the namespace holds (this process reads an
    object as deep as the API server allows: see `catalog`)."""

    namespace: str
    kitaru: Kitaru
    client: KitaruClient
    custom: kubernetes.client.CustomObjectsApi
    core: kubernetes.client.CoreV1Api
    batch: kubernetes.client.BatchV1Api
    # The snapshot taken after the last case; None once a test changed the namespace.
    last: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def project(self) -> Path:
        return self.kitaru.project

    @property
    def executable(self) -> Kitaru:
        return Kitaru(self.kitaru.project, self.kitaru.env)

    @contextmanager
    def unchanged(self) -> Iterator[None]:
        """Assert that the block leaves the namespace as it found it. What it found is the
        snapshot the previous case ended with (nothing writes specs between cases), so a
        case costs one snapshot."""
        before = self.snapshot() if self.last is None else self.last
        self.last = None
        yield
        after = self.snapshot()
        assert after == before, "the namespace changed"
        self.last = after

    def changed(self) -> None:
        """A test changed the namespace on purpose: the next case takes a new snapshot."""
        self.last = None

    def snapshot(self) -> dict[str, Any]:
        """Every object a request could create or change: Kitaru objects with their specs,
        ConfigMaps and Jobs by name."""
        state: dict[str, Any] = {}
        for plural in (DEPLOYMENTS, ROUTES, INVOCATIONS, SCHEDULES, PROMOTIONS):
            items = self.custom.list_namespaced_custom_object(
                GROUP, API_VERSION, self.namespace, plural
            )["items"]
            state[plural] = {i["metadata"]["name"]: i["spec"] for i in items}
        config_maps = self.core.list_namespaced_config_map(self.namespace).items
        state["configmaps"] = sorted(c.metadata.name for c in config_maps)
        state["jobs"] = sorted(
            j.metadata.name for j in self.batch.list_namespaced_job(self.namespace).items
        )
        return state


@pytest.fixture(scope="module")
def catalog(
    k8s: kubernetes.client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Catalog]:
    namespace = f"t-bad-inputs-{uuid.uuid4().hex[:6]}"
    core = kubernetes.client.CoreV1Api(k8s)
    core.create_namespace(
        kubernetes.client.V1Namespace(
            metadata=kubernetes.client.V1ObjectMeta(name=namespace, labels=TEST_NAMESPACE_LABELS)
        )
    )
    operator = OperatorProcess(namespace, tmp_path_factory.mktemp("operator"), resync_seconds=5)
    recursion_limit = sys.getrecursionlimit()
    # One case stores an invocation nested 9 990 levels deep; reading it back (the
    # snapshots) needs what the CLI and the operator set for themselves.
    sys.setrecursionlimit(DECODE_RECURSION_LIMIT)
    try:
        wait_for(lambda: core.read_namespaced_service_account("default", namespace), timeout=30)
        operator.start()
        root = tmp_path_factory.mktemp("catalog")
        kitaru = new_project(root, namespace, FLOWS_AND_MORE, runner=InProcessKitaru)
        kitaru(DEPLOY)
        kitaru(f"{DEPLOY} --tag canary --exclusive")
        for version in (1, 2):
            kitaru(f"flow tag {FLOW} benchmark --version {version}")
        kitaru(f"build flows/research.py:{FLOW}")
        # `nightly` moved from v3 to v1: its rollback target is the deleted v3.
        kitaru(f"flow tag {FLOW} nightly --version 3 --exclusive")
        kitaru(f"flow tag {FLOW} nightly --version 1 --exclusive")
        kitaru(f"flow deployments delete {FLOW} --version 3")
        kitaru(f"flow tag {FLOW} ab --split 1=50,2=50")
        (kitaru.project / "flows" / "compat.py").write_text(COMPAT_V1)
        (kitaru.project / "flows" / "compat_v2.py").write_text(COMPAT_V2)
        kitaru(f"deploy flows/compat.py:{COMPAT}")
        kitaru(f"build flows/compat_v2.py:{COMPAT}")
        kitaru(f"schedule create existing {FLOW} --cron @daily --suspend")
        sdk = sdk_client(kitaru)
        wait_for(  # every change recorded: default, canary, benchmark x2, nightly x2, ab
            lambda: len(sdk.deployments.history(FLOW)["changes"]) == 7,
            timeout=30,
            message="the route history recorded the set-up",
        )
        # The idempotency key `order-1` started one execution (topic "a"); once its Job
        # exists the namespace holds still (the cases compare snapshots across cases).
        kitaru(f'invoke {FLOW} --idempotency-key {KEY} --input \'{{"topic": "a"}}\'')
        batch = kubernetes.client.BatchV1Api(k8s)
        wait_for(
            lambda: batch.list_namespaced_job(namespace).items,
            timeout=60,
            message="the Job of the keyed execution",
        )
        for name, value in (("huge", HUGE), ("large", LARGE), ("deep", DEEP)):
            (kitaru.project / f"{name}.json").write_text(json.dumps(value))
        # From here on, the project's own source is over the ConfigMap limit (huge.json);
        # the source refusals get projects of their own inside it, and a flow outside it.
        for nested, odd_file in NESTED_PROJECTS.items():
            (kitaru.project / nested / ".kitaru").mkdir(parents=True)
            (kitaru.project / nested / "flows").mkdir()
            (kitaru.project / nested / "flows" / "research.py").write_text(FLOWS_AND_MORE)
            odd_file(kitaru.project / nested)
        (root / "outside").mkdir()
        (root / "outside" / "flow.py").write_text(FLOWS_AND_MORE)
        yield Catalog(
            namespace,
            kitaru,
            sdk,
            kubernetes.client.CustomObjectsApi(k8s),
            core,
            batch,
        )
    finally:
        operator.stop()
        core.delete_namespace(namespace, propagation_policy="Background")
        sys.setrecursionlimit(recursion_limit)
    assert "Traceback" not in operator.log(), operator.log()


def sdk_client(kitaru: Kitaru) -> KitaruClient:
    """The SDK on the CLI's connection (not a saved login of whoever runs the tests)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", kitaru.env["XDG_CONFIG_HOME"])
        return KitaruClient(resolve_connection(kitaru.env))


def terminal_safe(text: str) -> bool:
    """No character a terminal would act on: the message quotes hostile values escaped."""
    return not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", text)


# --- CLI: exit 1, "Error: ..." on stderr, the JSON envelope with -o json --------------


@dataclass(frozen=True)
class CliCase:
    id: str
    command: str
    kind: str
    fragment: str


def _cli(id: str, command: str, kind: str, fragment: str) -> Any:
    return pytest.param(CliCase(id, command, kind, fragment), id=id)


TAG = shlex.quote
CLI_CASES = [
    _cli(
        "cli-tag-incompatible-schema",
        f"flow tag {COMPAT} default --version 2",
        "IncompatibleSchema",
        f"version 2 of flow '{COMPAT}' would reject inputs that tag 'default' (version 1) "
        f"accepts: {TOPIC_RETYPED}. Keep the tag where it is, or move it anyway with --force",
    ),
    _cli(
        "cli-deploy-incompatible-schema",
        f"deploy flows/compat_v2.py:{COMPAT}",
        "IncompatibleSchema",
        f"version 3 of flow '{COMPAT}' would reject inputs that tag 'default' (version 1) "
        f"accepts: {TOPIC_RETYPED}",
    ),
    _cli(
        "cli-deploy-flow-name",
        "deploy flows/research.py:BadName",
        "InvalidName",
        "invalid flow name 'BadName'",
    ),
    _cli(
        "cli-deploy-tag-uppercase",
        f"deploy flows/research.py:{FLOW} --tag Stable",
        "InvalidName",
        "invalid tag 'Stable'",
    ),
    _cli(
        "cli-deploy-tag-too-long",
        f"deploy flows/research.py:{FLOW} --tag {'t' * 64}",
        "InvalidName",
        "at most 63 characters",
    ),
    _cli(
        "cli-deploy-tag-shell",
        f"deploy flows/research.py:{FLOW} --tag {TAG('x;rm -rf ~')}",
        "InvalidName",
        "invalid tag 'x;rm -rf ~'",
    ),
    _cli(
        "cli-deploy-tag-unicode",
        f"deploy flows/research.py:{FLOW} --tag stäble",
        "InvalidName",
        "invalid tag 'stäble'",
    ),
    _cli(
        "cli-deploy-tag-newline",
        f"deploy flows/research.py:{FLOW} --tag {TAG('stable' + chr(10))}",
        "InvalidName",
        "invalid tag 'stable\\n'",
    ),
    _cli(
        "cli-deploy-input-not-json",
        f"deploy flows/research.py:{FLOW} --input {TAG('topic=x')}",
        "InvalidInputs",
        "--input is not valid JSON",
    ),
    _cli(
        "cli-deploy-input-array",
        f"deploy flows/research.py:{FLOW} --input '[1]'",
        "InvalidInputs",
        "--input must be a JSON object",
    ),
    _cli(
        "cli-deploy-input-wrong-type",
        f"deploy flows/research.py:{FLOW} --input '{{\"topic\": 3}}'",
        "InvalidInputs",
        "input 'topic': 3 is not of type 'string'",
    ),
    _cli(
        "cli-deploy-input-unknown",
        f"deploy flows/research.py:{FLOW} --input '{{\"colour\": 1}}'",
        "InvalidInputs",
        "unknown input 'colour'",
    ),
    _cli(
        "cli-deploy-input-nan",
        f"deploy flows/research.py:{FLOW} --input '{{\"depth\": NaN}}'",
        "InvalidInputs",
        "NaN is not a JSON number",
    ),
    _cli(
        "cli-deploy-input-over-etcd-limit",
        f"deploy flows/research.py:{FLOW} --input @huge.json",
        "InvalidInputs",
        "bytes as JSON; at most 65,536 (64 KiB)",
    ),
    _cli(
        "cli-deploy-missing-file", f"deploy flows/nope.py:{FLOW}", "InvalidTarget", "no such file"
    ),
    _cli(
        "cli-deploy-source-too-large",
        DEPLOY,
        "SourceTooLarge",
        "a ConfigMap holds at most 1 MiB (1,048,576 bytes). Biggest files: 'huge.json' (2.0 MiB)",
    ),
    _cli(
        "cli-deploy-target-outside-project",
        f"deploy ../outside/flow.py:{FLOW}",
        "TargetOutsideProject",
        "is outside the Kitaru project",
    ),
    _cli(
        "cli-deploy-symlink-out-of-project",
        DEPLOY.replace("flows/", "linked/flows/"),
        "InvalidSource",
        "'leak' is a symlink to '/etc/hostname', outside the project",
    ),
    _cli(
        "cli-deploy-file-name-not-a-key",
        DEPLOY.replace("flows/", "oddnames/flows/"),
        "InvalidSource",
        "cannot ship 'notes copy.txt': a ConfigMap key holds only",
    ),
    _cli(
        "cli-invoke-version-zero",
        f"invoke {FLOW} --version 0",
        "InvalidVersion",
        "invalid version 0: versions are whole numbers starting at 1",
    ),
    _cli(
        "cli-invoke-version-negative",
        f"invoke {FLOW} --version -1",
        "InvalidVersion",
        "invalid version -1",
    ),
    _cli(
        "cli-invoke-version-not-a-number",
        f"invoke {FLOW} --version two",
        "UsageError",
        "'two' is not a valid integer",
    ),
    _cli(
        "cli-invoke-flow-uppercase",
        "invoke Research_Agent",
        "InvalidName",
        "invalid flow name 'Research_Agent'",
    ),
    _cli(
        "cli-invoke-flow-dns-form",
        "invoke research-agent",
        "InvalidName",
        "invalid flow name 'research-agent'",
    ),
    _cli("cli-invoke-flow-too-long", f"invoke {'f' * 49}", "InvalidName", "at most 48 characters"),
    _cli(
        "cli-invoke-flow-very-long",
        f"invoke {'f' * 10_000}",
        "InvalidName",
        "... (10000 characters)",
    ),
    _cli(
        "cli-invoke-tag-and-version",
        f"invoke {FLOW} --tag canary --version 2",
        "ConflictingSelectors",
        "either a tag (canary) or a version (2), not both",
    ),
    _cli(
        "cli-invoke-tag-control-chars",
        f"invoke {FLOW} --tag {TAG(HOSTILE_TAG)}",
        "InvalidName",
        "invalid tag '\\x1b]0;pwned\\x07\\x1b[2J'",
    ),
    _cli(
        "cli-invoke-input-string",
        f"invoke {FLOW} --input '\"topic\"'",
        "InvalidInputs",
        "must be a JSON object like",
    ),
    _cli(
        "cli-invoke-input-wrong-type",
        f'invoke {FLOW} --input \'{{"depth": "deep"}}\'',
        "InvalidInputs",
        "input 'depth': 'deep' is not of type 'integer'",
    ),
    _cli(
        "cli-invoke-input-unknown",
        f"invoke {FLOW} --input '{{\"extra\": 1}}'",
        "InvalidInputs",
        "unknown input 'extra' (expected: depth, topic)",
    ),
    _cli(
        "cli-invoke-input-infinity",
        f"invoke {FLOW} --input '{{\"depth\": Infinity}}'",
        "InvalidInputs",
        "Infinity is not a JSON number",
    ),
    _cli(
        "cli-invoke-input-over-etcd-limit",
        f"invoke {FLOW} --input @huge.json",
        "InvalidInputs",
        "bytes as JSON; at most 65,536 (64 KiB): pass large data by reference",
    ),
    _cli(
        "cli-invoke-input-over-env-limit",
        f"invoke {FLOW} --input @large.json",
        "InvalidInputs",
        "102,412 bytes as JSON; at most 65,536",
    ),
    _cli(
        "cli-invoke-input-too-deep",
        f"invoke {FLOW} --input @deep.json",
        "InvalidInputs",
        "nested more than 64 levels deep under 'topic'",
    ),
    _cli(
        "cli-invoke-input-file-missing",
        f"invoke {FLOW} --input @missing.json",
        "InvalidInputs",
        "cannot read --input file missing.json",
    ),
    _cli(
        "cli-invoke-misspelt-option",
        f"invoke {FLOW} --inputs '{{}}'",
        "UsageError",
        "No such option '--inputs'",
    ),
    _cli(
        "cli-tag-deleted-version",
        f"flow tag {FLOW} stable --version 3",
        "VersionNotFound",
        "has no version 3",
    ),
    _cli(
        "cli-tag-version-zero",
        f"flow tag {FLOW} stable --version 0",
        "InvalidVersion",
        "invalid version 0",
    ),
    _cli(
        "cli-tag-invalid-tag",
        f"flow tag {FLOW} Bad_Tag --version 1",
        "InvalidName",
        "invalid tag 'Bad_Tag'",
    ),
    _cli(
        "cli-tag-expires-default",
        f"flow tag {FLOW} default --version 1 --expires 7d",
        "InvalidExpiry",
        "the 'default' tag cannot expire",
    ),
    _cli(
        "cli-tag-expires-not-a-duration",
        f"flow tag {FLOW} canary --version 2 --expires soon",
        "InvalidExpiry",
        "'soon' is not a duration",
    ),
    _cli(
        "cli-tag-split-sum",
        f"flow tag {FLOW} stable --split 1=90,2=20",
        "InvalidSplit",
        "the weights of a split add up to 100; 1=90,2=20 adds up to 110",
    ),
    _cli(
        "cli-tag-split-syntax",
        f"flow tag {FLOW} stable --split 1:90,2:10",
        "InvalidSplit",
        "--split takes VERSION=WEIGHT pairs separated by commas, e.g. 2=90,3=10",
    ),
    _cli(
        "cli-tag-split-default",
        f"flow tag {FLOW} default --split 1=50,2=50",
        "InvalidSplit",
        "the 'default' tag cannot be split",
    ),
    _cli(
        "cli-tag-split-and-version",
        f"flow tag {FLOW} stable --version 1 --split 1=50,2=50",
        "InvalidSplit",
        "pass either --version or --split, not both",
    ),
    _cli(
        "cli-tag-split-exclusive",
        f"flow tag {FLOW} stable --split 1=50,2=50 --exclusive",
        "InvalidSplit",
        "a split tag is not exclusive: drop --exclusive",
    ),
    _cli(
        "cli-tag-split-deleted-version",
        f"flow tag {FLOW} stable --split 1=50,3=50",
        "VersionNotFound",
        "has no version 3",
    ),
    _cli(
        "cli-untag-split-version",
        f"flow untag {FLOW} ab --version 2",
        "InvalidSplit",
        "taking version 2 out would leave weights that do not add up to 100",
    ),
    _cli(
        "cli-invoke-key-too-long",
        f"invoke {FLOW} --tag ab --key {'k' * 300}",
        "InvalidRoutingKey",
        "a routing key is 1 to 256 characters",
    ),
    _cli(
        "cli-shadow-own-version",
        f"flow shadow {FLOW} canary --version 2 --fraction 0.5",
        "InvalidShadow",
        "tag 'canary' of flow 'research_agent' already routes to version 2",
    ),
    _cli(
        "cli-shadow-fraction",
        f"flow shadow {FLOW} canary --version 1 --fraction 1.5",
        "InvalidShadow",
        "--fraction is a number above 0 and at most 1 (0.2: one run in five); got 1.5",
    ),
    _cli(
        "cli-shadow-no-version",
        f"flow shadow {FLOW} canary --fraction 0.5",
        "InvalidShadow",
        "pass the candidate version and the fraction to mirror",
    ),
    _cli(
        "cli-shadow-unknown-tag",
        f"flow shadow {FLOW} nope --version 1 --fraction 0.5",
        "TagNotFound",
        "flow 'research_agent' has no tag 'nope'",
    ),
    _cli(
        "cli-untag-default",
        f"flow untag {FLOW} default",
        "TagError",
        "cannot be removed, only moved",
    ),
    _cli(
        "cli-untag-version-not-tagged",
        f"flow untag {FLOW} canary --version 1",
        "TagError",
        "does not route to version 1",
    ),
    _cli(
        "cli-rollback-created-tag",
        f"flow rollback {FLOW} canary",
        "NoPreviousTarget",
        "had no previous target",
    ),
    _cli(
        "cli-rollback-deleted-version",
        f"flow rollback {FLOW} nightly",
        "VersionNotFound",
        "to version(s) 3: deleted since",
    ),
    _cli(
        "cli-rollback-unknown-tag",
        f"flow rollback {FLOW} nope",
        "TagNotFound",
        "has no tag 'nope'",
    ),
    _cli(
        "cli-rollback-unknown-flow",
        "flow rollback no_such_flow stable",
        "NoDeployments",
        "flow 'no_such_flow' has no deployments yet",
    ),
    _cli(
        "cli-history-at-not-a-time",
        f"flow history {FLOW} --at yesterday",
        "InvalidTime",
        "'yesterday' is not a time",
    ),
    _cli(
        "cli-history-too-short",
        f"flow history {FLOW} stable --at 2000-01-01T00:00:00Z",
        "HistoryTooShort",
        "does not reach back to 2000-01-01T00:00:00Z",
    ),
    _cli(
        "cli-history-unknown-flow",
        "flow history no_such_flow",
        "NoDeployments",
        "flow 'no_such_flow' has no deployments yet",
    ),
    _cli(
        "cli-delete-version-negative",
        f"flow deployments delete {FLOW} --version -2",
        "InvalidVersion",
        "invalid version -2",
    ),
    _cli(
        "cli-delete-exclusive-version",
        f"flow deployments delete {FLOW} --version 2",
        "Rejected",
        "version 2 of flow research_agent holds the",
    ),
    _cli(
        "cli-prune-negative-keep",
        f"flow deployments prune {FLOW} --keep -1",
        "UsageError",
        "-1 is not in the range x>=0",
    ),
    _cli(
        "cli-curl-input-array",
        f"flow deployments curl {FLOW} --input '[1]'",
        "InvalidInputs",
        "--input must be a JSON object",
    ),
    _cli(
        "cli-invoke-idempotency-key-reused",
        f'invoke {FLOW} --idempotency-key {KEY} --input \'{{"topic": "b"}}\'',
        "IdempotencyKeyReused",
        KEY_REUSED,
    ),
    _cli(
        "cli-invoke-idempotency-key-space",
        f"invoke {FLOW} --idempotency-key 'order 1'",
        "InvalidName",
        "invalid idempotency key 'order 1': use 1 to 256 printable ASCII characters",
    ),
    _cli(
        "cli-curl-idempotency-key-empty",
        f"flow deployments curl {FLOW} --idempotency-key ''",
        "InvalidName",
        "invalid idempotency key ''",
    ),
    _cli(
        "cli-limit-zero",
        f"flow limit {FLOW} 0",
        "InvalidLimit",
        "invalid concurrency limit 0: use a whole number from 1 to 10000, or clear the limit",
    ),
    _cli(
        "cli-limit-neither-n-nor-clear",
        f"flow limit {FLOW}",
        "InvalidLimit",
        "give a limit N or --clear, not both or neither",
    ),
    _cli(
        "cli-limit-unknown-tag",
        f"flow limit {FLOW} 2 --tag nope",
        "TagNotFound",
        f"flow '{FLOW}' has no tag 'nope'",
    ),
    _cli(
        "cli-limit-unknown-flow",
        "flow limit no_such_flow 2",
        "NoDeployments",
        "flow 'no_such_flow' has no deployments yet",
    ),
    _cli(
        "cli-build-max-concurrency",
        f"build flows/research.py:{FLOW} --max-concurrency 2",
        "UsageError",
        "No such option '--max-concurrency'",
    ),
    _cli(
        "cli-executions-get-path",
        "executions get ../../etc/passwd",
        "InvalidName",
        "invalid execution id '../../etc/passwd'",
    ),
    _cli(
        "cli-executions-list-flow-name",
        "executions list --flow 'a;b'",
        "InvalidName",
        "invalid flow name 'a;b'",
    ),
    _cli(
        "cli-schedule-cron-out-of-range",
        f"schedule create nightly-news {FLOW} --cron '61 * * * *'",
        "InvalidSchedule",
        "invalid schedule '61 * * * *': minute 61 is out of range 0-59",
    ),
    _cli(
        "cli-schedule-cron-three-fields",
        f"schedule create nightly-news {FLOW} --cron '* * *'",
        "InvalidSchedule",
        "a cron expression has 5 fields (minute hour day-of-month month day-of-week), not 3",
    ),
    _cli(
        "cli-schedule-cron-unknown-macro",
        f"schedule create nightly-news {FLOW} --cron @reboot",
        "InvalidSchedule",
        "unknown schedule macro '@reboot'",
    ),
    _cli(
        "cli-schedule-cron-never-fires",
        f"schedule create nightly-news {FLOW} --cron '0 0 30 2 *'",
        "InvalidSchedule",
        "it never fires (no such date)",
    ),
    _cli(
        "cli-schedule-unknown-time-zone",
        f"schedule create nightly-news {FLOW} --cron @daily --tz Mars/Olympus",
        "UnknownTimeZone",
        "unknown time zone 'Mars/Olympus': use an IANA name like Europe/Berlin",
    ),
    _cli(
        "cli-schedule-tag-and-version",
        f"schedule create nightly-news {FLOW} --cron @daily --tag canary --version 2",
        "ConflictingSelectors",
        "either a tag (canary) or a version (2), not both",
    ),
    _cli(
        "cli-schedule-name-uppercase",
        f"schedule create Nightly {FLOW} --cron @daily",
        "InvalidName",
        "invalid schedule name 'Nightly'",
    ),
    _cli(
        "cli-schedule-name-too-long",
        f"schedule create {'n' * 53} {FLOW} --cron @daily",
        "InvalidName",
        "at most 52 characters",
    ),
    _cli(
        "cli-schedule-unknown-flow",
        "schedule create nightly-news no_such_flow --cron @daily",
        "NoDeployments",
        "flow 'no_such_flow' has no deployments yet",
    ),
    _cli(
        "cli-schedule-unknown-tag",
        f"schedule create nightly-news {FLOW} --cron @daily --tag nope",
        "TagNotFound",
        "flow 'research_agent' has no tag 'nope'",
    ),
    _cli(
        "cli-schedule-deadline-negative",
        f"schedule create nightly-news {FLOW} --cron @daily --starting-deadline-seconds -5",
        "UsageError",
        "-5 is not in the range x>=1",
    ),
    _cli(
        "cli-schedule-policy-lowercase",
        f"schedule create nightly-news {FLOW} --cron @daily --concurrency-policy forbid",
        "UsageError",
        "'forbid' is not one of 'Allow', 'Forbid', 'Replace'",
    ),
    _cli(
        "cli-schedule-input-wrong-type",
        f'schedule create nightly-news {FLOW} --cron @daily --input \'{{"depth": "deep"}}\'',
        "InvalidInputs",
        "input 'depth': 'deep' is not of type 'integer'",
    ),
    _cli(
        "cli-schedule-exists",
        f"schedule create existing {FLOW} --cron @hourly",
        "ScheduleExists",
        "schedule 'existing' already exists: delete it first",
    ),
    _cli(
        "cli-schedule-show-missing",
        "schedule show nope",
        "ScheduleNotFound",
        "schedule 'nope' not found",
    ),
    _cli(
        "cli-ui-in-cluster-outside-a-pod",
        "ui --in-cluster",
        "KitaruConnectionError",
        "not running in a pod (no KUBERNETES_SERVICE_HOST): drop --in-cluster",
    ),
    _cli("cli-ui-port-zero", "ui --port 0", "UsageError", "0 is not in the range 1<=x<=65535"),
    _cli(
        "cli-ui-on-a-network-address",
        "ui --host 0.0.0.0",
        "UnsafeAddress",
        "--host 0.0.0.0 would let everyone who reaches it act with your Kitaru connection",
    ),
    _cli(
        "cli-ui-proxy-on-a-network-address-without-secret",
        "ui --auth-proxy --host 0.0.0.0",
        "UnsafeAddress",
        "--auth-proxy on 0.0.0.0 needs --proxy-secret-file",
    ),
    _cli(
        "cli-promote-same-tag",
        "flow promote research_agent --from canary --to canary",
        "InvalidPromotion",
        "--from and --to are both 'canary'",
    ),
    _cli(
        "cli-promote-min-success-out-of-range",
        "flow promote research_agent --from canary --to stable --min-success 1.5",
        "InvalidPromotion",
        "min success 1.5 must be a fraction between 0 and 1",
    ),
    _cli(
        "cli-promote-min-runs-negative",
        "flow promote research_agent --from canary --to stable --min-runs -1",
        "InvalidPromotion",
        "min runs -1 must be a whole number >= 0",
    ),
    _cli(
        "cli-promote-window-not-a-duration",
        "flow promote research_agent --from canary --to stable --after soon",
        "InvalidPromotion",
        "window 'soon' is not a duration",
    ),
    _cli(
        "cli-promote-unknown-from-tag",
        "flow promote research_agent --from nope --to stable",
        "TagNotFound",
        "has no tag 'nope'",
    ),
    _cli(
        "cli-promote-shared-from-tag",
        "flow promote research_agent --from benchmark --to stable",
        "AmbiguousTag",
        "a promotion needs one candidate version",
    ),
    _cli(
        "cli-promote-unknown-flow",
        "flow promote ghost_flow --from canary --to stable",
        "NoDeployments",
        "flow 'ghost_flow' has no deployments yet",
    ),
    _cli(
        "cli-promote-cancel-nothing-waiting",
        "flow promote research_agent --to stable --cancel",
        "PromotionNotFound",
        "has no waiting promotion of tag 'stable'",
    ),
    _cli(
        "cli-auth-token-other-server",
        "auth token --server https://prod.example.com:6443",
        "ServerMismatch",
        "not https://prod.example.com:6443, the server it was asked for: switch to that "
        "server's connection",
    ),
    _cli(
        "cli-auth-token-over-a-day",
        "auth token --duration 86401",
        "UsageError",
        "86401 is not in the range 600<=x<=86400",
    ),
]


def answers_cli_case(kitaru: Kitaru, case: CliCase) -> None:
    """Exit 1, nothing on stdout, the error on stderr (and its JSON envelope with -o json)."""
    text = kitaru(case.command, check=False)
    assert (text.code, text.out) == (1, ""), text
    assert case.fragment in text.err and terminal_safe(text.err), text.err
    assert text.err.startswith("Error: " if case.kind != "UsageError" else "Usage: "), text.err
    assert len(text.err) < 1000
    envelope = kitaru(case.command + " -o json", check=False)
    assert (envelope.code, envelope.out) == (1, ""), envelope
    error = json.loads(envelope.err)["error"]
    assert (error["type"], case.fragment in error["message"]) == (case.kind, True), error


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli(catalog: Catalog, case: CliCase) -> None:
    with catalog.unchanged():
        answers_cli_case(catalog.kitaru, case)


# Cases that also run as real processes: a usage error before any command runs, names
# and inputs refused by the client, @file inputs read from the project directory, errors
# that need the API server, a flow file imported for a deploy, terminal-hostile text on
# a real stderr, an environment-dependent refusal, and two MCP tool errors on the wire.
SUBPROCESS_SAMPLE = (
    "cli-invoke-misspelt-option",
    "cli-invoke-version-not-a-number",
    "cli-deploy-tag-shell",
    "cli-invoke-input-over-etcd-limit",
    "cli-tag-deleted-version",
    "cli-invoke-idempotency-key-reused",
    "cli-deploy-incompatible-schema",
    "cli-invoke-tag-control-chars",
    "cli-ui-in-cluster-outside-a-pod",
    "cli-schedule-exists",
    "mcp-invoke-unknown-argument",
    "mcp-rollback-deleted-version",
)


@pytest.mark.parametrize("case", [p for p in CLI_CASES if p.id in SUBPROCESS_SAMPLE])
def test_cli_as_a_process(catalog: Catalog, case: CliCase) -> None:
    """The `kitaru` executable gives the answer the in-process run gives."""
    with catalog.unchanged():
        answers_cli_case(catalog.executable, case)


# --- SDK: a KitaruError with the same message and kind ------------------------------


@dataclass(frozen=True)
class SdkCase:
    id: str
    call: Callable[[KitaruClient, Path], object]
    kind: str
    fragment: str


def _sdk(id: str, call: Callable[[KitaruClient, Path], object], kind: str, fragment: str) -> Any:
    return pytest.param(SdkCase(id, call, kind, fragment), id=id)


def _target(project: Path, flow: str = FLOW) -> str:
    return f"{project}/flows/research.py:{flow}"


SDK_CASES = [
    _sdk(
        "sdk-deploy-not-a-project",
        lambda c, p: c.deployments.deploy(f"{p.parent}/outside/flow.py:{FLOW}"),
        "NotAProject",
        "is in no Kitaru project",
    ),
    _sdk(
        "sdk-deploy-source-too-large",
        lambda c, p: c.deployments.deploy(_target(p), inputs={"topic": "t"}),
        "SourceTooLarge",
        "Biggest files: 'huge.json' (2.0 MiB)",
    ),
    _sdk(
        "sdk-tag-incompatible-schema",
        lambda c, p: c.deployments.tag(COMPAT, "default", 2),
        "IncompatibleSchema",
        f"tag 'default' (version 1) accepts: {TOPIC_RETYPED}",
    ),
    _sdk(
        "sdk-deploy-incompatible-schema",
        lambda c, p: c.deployments.deploy(f"{p}/flows/compat_v2.py:{COMPAT}"),
        "IncompatibleSchema",
        f"tag 'default' (version 1) accepts: {TOPIC_RETYPED}",
    ),
    _sdk(
        "sdk-invoke-version-zero",
        lambda c, p: c.deployments.invoke(FLOW, version=0),
        "InvalidVersion",
        "invalid version 0",
    ),
    _sdk(
        "sdk-invoke-version-bool",
        lambda c, p: c.deployments.invoke(FLOW, version=True),
        "InvalidVersion",
        "invalid version True",
    ),
    _sdk(
        "sdk-invoke-version-string",
        lambda c, p: c.deployments.invoke(FLOW, version="2"),
        "InvalidVersion",
        "invalid version '2'",
    ),
    _sdk(
        "sdk-invoke-flow-none",
        lambda c, p: c.deployments.invoke(None),
        "InvalidName",
        "invalid flow name None",
    ),
    _sdk(
        "sdk-invoke-tag-not-a-string",
        lambda c, p: c.deployments.invoke(FLOW, tag=5),
        "InvalidName",
        "invalid tag 5",
    ),
    _sdk(
        "sdk-invoke-inputs-list",
        lambda c, p: c.deployments.invoke(FLOW, inputs=["topic"]),
        "InvalidInputs",
        "inputs must be a JSON object",
    ),
    _sdk(
        "sdk-invoke-inputs-nan",
        lambda c, p: c.deployments.invoke(FLOW, inputs={"topic": "t", "depth": float("nan")}),
        "InvalidInputs",
        "nan at 'depth' is not a JSON number",
    ),
    _sdk(
        "sdk-invoke-inputs-not-json",
        lambda c, p: c.deployments.invoke(FLOW, inputs={"topic": {"a", "b"}}),
        "InvalidInputs",
        "set at 'topic' is not a JSON value",
    ),
    _sdk(
        "sdk-invoke-inputs-int-key",
        lambda c, p: c.deployments.invoke(FLOW, inputs={1: "t"}),
        "InvalidInputs",
        "key 1 is not a string",
    ),
    _sdk(
        "sdk-invoke-inputs-over-etcd-limit",
        lambda c, p: c.deployments.invoke(FLOW, inputs=HUGE),
        "InvalidInputs",
        "bytes as JSON; at most 65,536",
    ),
    _sdk(
        "sdk-invoke-inputs-too-deep",
        lambda c, p: c.deployments.invoke(FLOW, inputs=DEEP),
        "InvalidInputs",
        "nested more than 64 levels",
    ),
    _sdk(
        "sdk-invoke-unknown-input",
        lambda c, p: load_target(_target(p))[0].invoke(colour="red", client=c),
        "InvalidInputs",
        "unknown input 'colour'",
    ),
    _sdk(
        "sdk-deploy-wrong-type",
        lambda c, p: load_target(_target(p))[0].deploy(topic=3, client=c),
        "InvalidInputs",
        "input 'topic': 3 is not of type 'string'",
    ),
    _sdk(
        "sdk-deploy-tag-too-long",
        lambda c, p: c.deployments.deploy(_target(p), tag="t" * 64),
        "InvalidName",
        "at most 63 characters",
    ),
    _sdk(
        "sdk-deploy-inputs-over-etcd-limit",
        lambda c, p: c.deployments.deploy(_target(p), inputs=HUGE),
        "InvalidInputs",
        "bytes as JSON; at most 65,536",
    ),
    _sdk(
        "sdk-tag-deleted-version",
        lambda c, p: c.deployments.tag(FLOW, "stable", 3),
        "VersionNotFound",
        "has no version 3",
    ),
    _sdk(
        "sdk-tag-split-sum",
        lambda c, p: c.deployments.tag(FLOW, "stable", split={1: 90, 2: 20}),
        "InvalidSplit",
        "adds up to 110",
    ),
    _sdk(
        "sdk-tag-split-not-a-mapping",
        lambda c, p: c.deployments.tag(FLOW, "stable", split=[1, 2]),  # type: ignore[arg-type]
        "InvalidSplit",
        "split maps versions to percents, e.g. {2: 90, 3: 10}",
    ),
    _sdk(
        "sdk-tag-neither-version-nor-split",
        lambda c, p: c.deployments.tag(FLOW, "stable"),
        "InvalidSplit",
        "pass the version tag 'stable' routes to (--version N), or split it",
    ),
    _sdk(
        "sdk-untag-split-version",
        lambda c, p: c.deployments.untag(FLOW, "ab", version=1),
        "InvalidSplit",
        "kitaru flow tag research_agent ab --version 2 --exclusive",
    ),
    _sdk(
        "sdk-invoke-key-empty",
        lambda c, p: c.deployments.invoke(FLOW, tag="ab", routing_key=""),
        "InvalidRoutingKey",
        "a routing key is 1 to 256 characters",
    ),
    _sdk(
        "sdk-shadow-off-and-version",
        lambda c, p: c.deployments.shadow(FLOW, "canary", 1, 0.5, off=True),
        "InvalidShadow",
        "pass either --off or --version and --fraction, not both",
    ),
    _sdk(
        "sdk-shadow-fraction-zero",
        lambda c, p: c.deployments.shadow(FLOW, "canary", 1, 0),
        "InvalidShadow",
        "--fraction is a number above 0 and at most 1",
    ),
    _sdk(
        "sdk-tag-expires-default",
        lambda c, p: c.deployments.tag(FLOW, "default", 1, expires="7d"),
        "InvalidExpiry",
        "the 'default' tag cannot expire",
    ),
    _sdk(
        "sdk-tag-expires-too-long",
        lambda c, p: c.deployments.tag(FLOW, "canary", 2, exclusive=True, expires="400d"),
        "InvalidExpiry",
        "is more than a year",
    ),
    _sdk(
        "sdk-rollback-created-tag",
        lambda c, p: c.deployments.rollback(FLOW, "canary"),
        "NoPreviousTarget",
        "had no previous target",
    ),
    _sdk(
        "sdk-rollback-deleted-version",
        lambda c, p: c.deployments.rollback(FLOW, "nightly"),
        "VersionNotFound",
        "to version(s) 3: deleted since",
    ),
    _sdk(
        "sdk-rollback-unknown-tag",
        lambda c, p: c.deployments.rollback(FLOW, "nope"),
        "TagNotFound",
        "has no tag 'nope'",
    ),
    _sdk(
        "sdk-history-at-not-a-time",
        lambda c, p: c.deployments.history(FLOW, at="2025-13-01"),
        "InvalidTime",
        "'2025-13-01' is not a time",
    ),
    _sdk(
        "sdk-history-too-short",
        lambda c, p: c.deployments.history(FLOW, "stable", at="2000-01-01T00:00:00Z"),
        "HistoryTooShort",
        "does not reach back to 2000-01-01T00:00:00Z",
    ),
    _sdk(
        "sdk-history-unknown-flow",
        lambda c, p: c.deployments.history("no_such_flow"),
        "NoDeployments",
        "flow 'no_such_flow' has no deployments yet",
    ),
    _sdk(
        "sdk-delete-version-zero",
        lambda c, p: c.deployments.delete(FLOW, 0),
        "InvalidVersion",
        "invalid version 0",
    ),
    _sdk(
        "sdk-invoke-idempotency-key-reused",
        lambda c, p: c.deployments.invoke(
            FLOW, inputs={"topic": "a"}, tag="canary", idempotency_key=KEY
        ),
        "IdempotencyKeyReused",
        KEY_REUSED,
    ),
    _sdk(
        "sdk-invoke-idempotency-key-too-long",
        lambda c, p: c.deployments.invoke(FLOW, idempotency_key="k" * 257),
        "InvalidName",
        "invalid idempotency key 'kkk",
    ),
    _sdk(
        "sdk-limit-bool",
        lambda c, p: c.deployments.limit(FLOW, True),  # type: ignore[arg-type]
        "InvalidLimit",
        "invalid concurrency limit True",
    ),
    _sdk(
        "sdk-limit-too-high",
        lambda c, p: c.deployments.limit(FLOW, 10_001, tag="canary"),
        "InvalidLimit",
        "invalid concurrency limit 10001: use a whole number from 1 to 10000",
    ),
    _sdk(
        "sdk-deploy-max-concurrency-untagged",
        lambda c, p: c.deployments.deploy(_target(p), untagged=True, max_concurrency=2),
        "InvalidLimit",
        "an untagged build has no route to limit: deploy it with a tag",
    ),
    _sdk(
        "sdk-executions-get-empty",
        lambda c, p: c.executions.get(""),
        "InvalidName",
        "invalid execution id ''",
    ),
    _sdk(
        "sdk-schedule-cron-out-of-range",
        lambda c, p: c.schedules.create("nightly-news", FLOW, "0 25 * * *"),
        "InvalidSchedule",
        "hour 25 is out of range 0-23",
    ),
    _sdk(
        "sdk-schedule-unknown-time-zone",
        lambda c, p: c.schedules.create("nightly-news", FLOW, "@daily", time_zone="Berlin"),
        "UnknownTimeZone",
        "unknown time zone 'Berlin'",
    ),
    _sdk(
        "sdk-schedule-tag-and-version",
        lambda c, p: c.schedules.create("nightly-news", FLOW, "@daily", tag="canary", version=2),
        "ConflictingSelectors",
        "either a tag (canary) or a version (2), not both",
    ),
    _sdk(
        "sdk-schedule-deadline-zero",
        lambda c, p: c.schedules.create(
            "nightly-news", FLOW, "@daily", starting_deadline_seconds=0
        ),
        "InvalidStartingDeadline",
        "invalid starting deadline 0: a whole number of seconds >= 1",
    ),
    _sdk(
        "sdk-schedule-history-limit-negative",
        lambda c, p: c.schedules.create(
            "nightly-news", FLOW, "@daily", successful_runs_history_limit=-1
        ),
        "InvalidHistoryLimit",
        "invalid successful runs history limit -1: a whole number from 0 to 1000",
    ),
    _sdk(
        "sdk-schedule-policy-unknown",
        lambda c, p: c.schedules.create("nightly-news", FLOW, "@daily", concurrency_policy="Skip"),
        "InvalidConcurrencyPolicy",
        "unknown concurrency policy 'Skip': use Allow",
    ),
    _sdk(
        "sdk-schedule-deleted-version",
        lambda c, p: c.schedules.create("nightly-news", FLOW, "@daily", version=3),
        "VersionNotFound",
        "flow 'research_agent' has no version 3",
    ),
    _sdk(
        "sdk-schedule-input-unknown",
        lambda c, p: c.schedules.create("nightly-news", FLOW, "@daily", inputs={"extra": 1}),
        "InvalidInputs",
        "unknown input 'extra'",
    ),
    _sdk(
        "sdk-schedule-pause-missing",
        lambda c, p: c.schedules.pause("nope"),
        "ScheduleNotFound",
        "schedule 'nope' not found",
    ),
    _sdk(
        "sdk-promote-same-tag",
        lambda c, p: c.deployments.promote(FLOW, "canary", "canary"),
        "InvalidPromotion",
        "--from and --to are both 'canary'",
    ),
    _sdk(
        "sdk-promote-min-success-out-of-range",
        lambda c, p: c.deployments.promote(FLOW, "canary", "stable", min_success=-0.1),
        "InvalidPromotion",
        "must be a fraction between 0 and 1",
    ),
    _sdk(
        "sdk-promote-unknown-from-tag",
        lambda c, p: c.deployments.promote(FLOW, "nope", "stable"),
        "TagNotFound",
        "has no tag 'nope'",
    ),
    _sdk(
        "sdk-promote-shared-from-tag",
        lambda c, p: c.deployments.promote(FLOW, "benchmark", "stable"),
        "AmbiguousTag",
        "a promotion needs one candidate version",
    ),
    _sdk(
        "sdk-promote-cancel-nothing-waiting",
        lambda c, p: c.deployments.cancel_promotion(FLOW, "stable"),
        "PromotionNotFound",
        "has no waiting promotion of tag 'stable'",
    ),
    _sdk(
        "sdk-auth-token-other-server",
        lambda c, p: c.auth_token(server="https://prod.example.com:6443"),
        "ServerMismatch",
        "the server it was asked for",
    ),
]


@pytest.mark.parametrize("case", SDK_CASES)
def test_sdk(catalog: Catalog, case: SdkCase) -> None:
    with catalog.unchanged():
        with pytest.raises(KitaruError) as caught:
            case.call(catalog.client, catalog.project)
        assert (caught.value.kind, case.fragment in caught.value.message) == (case.kind, True), (
            caught.value.kind,
            caught.value.message,
        )
        assert len(caught.value.message) < 1000


# --- MCP: a tool error (isError) whose text names what to fix -------------------------


@dataclass(frozen=True)
class McpCase:
    id: str
    tool: str
    arguments: dict[str, Any]
    fragment: str


MCP_CASES = [
    McpCase(
        "mcp-deploy-source-too-large",
        "kitaru_deployments_deploy",
        {"target": f"flows/research.py:{FLOW}", "inputs": {"topic": "t"}},
        "List what the flow does not need in .kitaruignore at the project root",
    ),
    McpCase(
        "mcp-tag-incompatible-schema",
        "kitaru_deployments_tag",
        {"flow": COMPAT, "tag": "default", "version": 2, "exclusive": True},
        f"tag 'default' (version 1) accepts: {TOPIC_RETYPED}",
    ),
    McpCase(
        "mcp-invoke-version-zero",
        "kitaru_deployments_invoke",
        {"flow": FLOW, "version": 0},
        "version\n  Input should be greater than or equal to 1",
    ),
    McpCase(
        "mcp-invoke-version-string",
        "kitaru_deployments_invoke",
        {"flow": FLOW, "version": "two"},
        "version\n  Input should be a valid integer",
    ),
    McpCase(
        "mcp-invoke-inputs-not-an-object",
        "kitaru_deployments_invoke",
        {"flow": FLOW, "inputs": "topic=x"},
        "inputs\n  Input should be a valid dictionary",
    ),
    McpCase(
        "mcp-invoke-unknown-argument",
        "kitaru_deployments_invoke",
        {"flow": FLOW, "input": {"topic": "x"}},
        "input\n  Extra inputs are not permitted",
    ),
    McpCase("mcp-invoke-missing-flow", "kitaru_deployments_invoke", {}, "flow\n  Field required"),
    McpCase(
        "mcp-invoke-flow-invalid",
        "kitaru_deployments_invoke",
        {"flow": "Research-Agent"},
        "invalid flow name 'Research-Agent'",
    ),
    McpCase(
        "mcp-invoke-tag-shell",
        "kitaru_deployments_invoke",
        {"flow": FLOW, "tag": "$(reboot)"},
        "invalid tag '$(reboot)'",
    ),
    McpCase(
        "mcp-invoke-inputs-wrong-type",
        "kitaru_deployments_invoke",
        {"flow": FLOW, "inputs": {"depth": [1]}},
        "input 'depth': [1] is not of type 'integer'",
    ),
    McpCase(
        "mcp-invoke-inputs-over-etcd-limit",
        "kitaru_deployments_invoke",
        {"flow": FLOW, "inputs": HUGE},
        "bytes as JSON; at most 65,536",
    ),
    McpCase(
        "mcp-invoke-inputs-too-deep",
        "kitaru_deployments_invoke",
        {"flow": FLOW, "inputs": DEEP},
        "nested more than 64 levels",
    ),
    McpCase(
        "mcp-deploy-target-outside",
        "kitaru_deployments_deploy",
        {"target": "/etc/passwd:root"},
        "invalid target '/etc/passwd:root'",
    ),
    McpCase(
        "mcp-deploy-target-above-project",
        "kitaru_deployments_deploy",
        {"target": "../outside.py:research_agent"},
        "is outside the project",
    ),
    McpCase(
        "mcp-deploy-target-absolute-elsewhere",
        "kitaru_deployments_deploy",
        {"target": "/tmp/outside.py:research_agent"},
        "is outside the project",
    ),
    McpCase(
        "mcp-deploy-tag-unicode",
        "kitaru_deployments_deploy",
        {"target": f"flows/research.py:{FLOW}", "tag": "prod-😀"},
        "invalid tag 'prod-😀'",
    ),
    McpCase(
        "mcp-tag-deleted-version",
        "kitaru_deployments_tag",
        {"flow": FLOW, "tag": "stable", "version": 3},
        "has no version 3",
    ),
    McpCase(
        "mcp-tag-split-sum",
        "kitaru_deployments_tag",
        {"flow": FLOW, "tag": "stable", "split": {"1": 90, "2": 20}},
        "adds up to 110",
    ),
    McpCase(
        "mcp-tag-split-default",
        "kitaru_deployments_tag",
        {"flow": FLOW, "tag": "default", "split": {"1": 50, "2": 50}},
        "the 'default' tag cannot be split",
    ),
    McpCase(
        "mcp-tag-split-and-version",
        "kitaru_deployments_tag",
        {"flow": FLOW, "tag": "stable", "version": 1, "split": {"1": 50, "2": 50}},
        "pass either --version or --split, not both",
    ),
    McpCase(
        "mcp-invoke-key-too-long",
        "kitaru_deployments_invoke",
        {"flow": FLOW, "tag": "ab", "key": "k" * 300},
        "a routing key is 1 to 256 characters",
    ),
    McpCase(
        "mcp-shadow-own-version",
        "kitaru_deployments_shadow",
        {"flow": FLOW, "tag": "canary", "version": 2, "fraction": 0.5},
        "already routes to version 2",
    ),
    McpCase(
        "mcp-shadow-deleted-version",
        "kitaru_deployments_shadow",
        {"flow": FLOW, "tag": "canary", "version": 3, "fraction": 0.5},
        "has no version 3",
    ),
    McpCase(
        "mcp-tag-expires-default",
        "kitaru_deployments_tag",
        {"flow": FLOW, "tag": "default", "version": 1, "expires": "7d"},
        "the 'default' tag cannot expire",
    ),
    McpCase(
        "mcp-tag-expires-not-a-duration",
        "kitaru_deployments_tag",
        {"flow": FLOW, "tag": "canary", "version": 2, "expires": "7 days"},
        "'7 days' is not a duration",
    ),
    McpCase(
        "mcp-untag-default",
        "kitaru_deployments_untag",
        {"flow": FLOW, "tag": "default"},
        "cannot be removed, only moved",
    ),
    McpCase(
        "mcp-rollback-created-tag",
        "kitaru_deployments_rollback",
        {"flow": FLOW, "tag": "canary"},
        "had no previous target",
    ),
    McpCase(
        "mcp-rollback-deleted-version",
        "kitaru_deployments_rollback",
        {"flow": FLOW, "tag": "nightly"},
        "to version(s) 3: deleted since",
    ),
    McpCase(
        "mcp-rollback-unknown-flow",
        "kitaru_deployments_rollback",
        {"flow": "no_such_flow", "tag": "stable"},
        "flow 'no_such_flow' has no deployments yet",
    ),
    McpCase(
        "mcp-history-at-not-a-time",
        "kitaru_deployments_history",
        {"flow": FLOW, "at": "noon"},
        "'noon' is not a time",
    ),
    McpCase(
        "mcp-history-too-short",
        "kitaru_deployments_history",
        {"flow": FLOW, "at": "2000-01-01T00:00:00Z"},
        "does not reach back to 2000-01-01T00:00:00Z",
    ),
    McpCase(
        "mcp-delete-exclusive-version",
        "kitaru_deployments_delete",
        {"flow": FLOW, "version": 2},
        "version 2 of flow research_agent holds the",
    ),
    McpCase(
        "mcp-invoke-idempotency-key-reused",
        "kitaru_deployments_invoke",
        {"flow": FLOW, "idempotency_key": KEY},
        KEY_REUSED,
    ),
    McpCase(
        "mcp-invoke-idempotency-key-control-chars",
        "kitaru_deployments_invoke",
        {"flow": FLOW, "idempotency_key": HOSTILE_TAG},
        "invalid idempotency key '\\x1b]0;pwned",
    ),
    McpCase(
        "mcp-limit-zero",
        "kitaru_deployments_limit",
        {"flow": FLOW, "max_concurrency": 0},
        "invalid concurrency limit 0: use a whole number from 1 to 10000",
    ),
    McpCase(
        "mcp-limit-missing",
        "kitaru_deployments_limit",
        {"flow": FLOW},
        "max_concurrency\n  Field required",
    ),
    McpCase(
        "mcp-deploy-max-concurrency-string",
        "kitaru_deployments_deploy",
        {"target": f"flows/research.py:{FLOW}", "max_concurrency": "many"},
        "max_concurrency\n  Input should be a valid integer",
    ),
    McpCase(
        "mcp-executions-get-invalid-id",
        "kitaru_executions_get",
        {"exec_id": "Run 1"},
        "invalid execution id 'Run 1'",
    ),
    McpCase(
        "mcp-schedule-cron-three-fields",
        "kitaru_schedules_create",
        {"name": "nightly-news", "flow": FLOW, "cron": "* * *"},
        "a cron expression has 5 fields",
    ),
    McpCase(
        "mcp-schedule-unknown-time-zone",
        "kitaru_schedules_create",
        {"name": "nightly-news", "flow": FLOW, "cron": "@daily", "time_zone": "Mars/Olympus"},
        "unknown time zone 'Mars/Olympus'",
    ),
    McpCase(
        "mcp-schedule-tag-and-version",
        "kitaru_schedules_create",
        {"name": "nightly-news", "flow": FLOW, "cron": "@daily", "tag": "canary", "version": 2},
        "either a tag (canary) or a version (2), not both",
    ),
    McpCase(
        "mcp-schedule-deadline-zero",
        "kitaru_schedules_create",
        {"name": "nightly-news", "flow": FLOW, "cron": "@daily", "starting_deadline_seconds": 0},
        "invalid starting deadline 0",
    ),
    McpCase(
        "mcp-schedule-policy-unknown",
        "kitaru_schedules_create",
        {"name": "nightly-news", "flow": FLOW, "cron": "@daily", "concurrency_policy": "forbid"},
        "unknown concurrency policy 'forbid'",
    ),
    McpCase(
        "mcp-schedule-name-invalid",
        "kitaru_schedules_create",
        {"name": "Nightly News", "flow": FLOW, "cron": "@daily"},
        "invalid schedule name 'Nightly News'",
    ),
    McpCase(
        "mcp-schedule-delete-missing",
        "kitaru_schedules_delete",
        {"name": "nope"},
        "schedule 'nope' not found",
    ),
    McpCase(
        "mcp-promote-same-tag",
        "kitaru_deployments_promote",
        {"flow": FLOW, "from_tag": "canary", "to_tag": "canary"},
        "--from and --to are both 'canary'",
    ),
    McpCase(
        "mcp-promote-min-runs-negative",
        "kitaru_deployments_promote",
        {"flow": FLOW, "from_tag": "canary", "to_tag": "stable", "min_runs": -3},
        "min runs -3 must be a whole number >= 0",
    ),
    McpCase(
        "mcp-promote-unknown-from-tag",
        "kitaru_deployments_promote",
        {"flow": FLOW, "from_tag": "nope", "to_tag": "stable"},
        "has no tag 'nope'",
    ),
    McpCase(
        "mcp-promote-cancel-nothing-waiting",
        "kitaru_deployments_cancel_promotion",
        {"flow": FLOW, "to_tag": "stable"},
        "has no waiting promotion of tag 'stable'",
    ),
]


def mcp_failures(catalog: Catalog, cases: list[McpCase], *, process: bool) -> list[str]:
    """Each case's tool error checked over one session: the server in this process, or
    `kitaru mcp` as a process (`process`)."""
    failures: list[str] = []
    connect = mcp_session if process else mcp_in_process

    async def scenario() -> None:
        async with connect(catalog.project, catalog.kitaru.env) as session:
            for case in cases:
                try:
                    with catalog.unchanged():
                        result = await session.call_tool(case.tool, case.arguments)
                except AssertionError as changed:
                    failures.append(f"{case.id}: {changed}")
                    continue
                text = "".join(getattr(c, "text", "") for c in result.content)
                if not result.is_error or case.fragment not in text:
                    failures.append(f"{case.id}: is_error={result.is_error} {text[:300]!r}")

    anyio.run(scenario)
    return failures


def test_mcp(catalog: Catalog) -> None:
    failures = mcp_failures(catalog, MCP_CASES, process=False)
    assert not failures, "\n".join(failures)


def test_mcp_as_a_process(catalog: Catalog) -> None:
    """`kitaru mcp` over stdio gives the tool errors the in-process server gives."""
    sample = [case for case in MCP_CASES if case.id in SUBPROCESS_SAMPLE]
    assert len(sample) == 2
    failures = mcp_failures(catalog, sample, process=True)
    assert not failures, "\n".join(failures)


# --- kubectl: refused by the API server (schema, CEL, admission) --------------------


@dataclass(frozen=True)
class KubectlCase:
    id: str
    manifest: str  # JSON text: some cases are not expressible as a dict
    fragment: str


def _obj(kind: str, name: str, spec: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": f"{GROUP}/{API_VERSION}",
            "kind": kind,
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def _fdep(version: Any = 4, name: str | None = None, **spec: Any) -> str:
    snapshot = spec.pop(
        "snapshot", {"image": "kitaru/runner:test", "entrypoint": "m:research_agent"}
    )
    body = {"flow": FLOW, "version": version, "snapshot": snapshot, **spec}
    return _obj("FlowDeployment", name or f"research-agent-v{version}", body)


def _froute(
    tag: str,
    versions: list[Any],
    exclusive: bool = True,
    name: str | None = None,
    expires_at: str | None = None,
    split: dict[int, int] | None = None,
    shadow: dict[str, Any] | None = None,
) -> str:
    spec: dict[str, Any] = {"flow": FLOW, "tag": tag, "exclusive": exclusive, "versions": versions}
    if expires_at is not None:
        spec["expiresAt"] = expires_at
    if split is not None:
        spec["split"] = [{"version": v, "weight": w} for v, w in split.items()]
    if shadow is not None:
        spec["shadow"] = shadow
    return _obj("FlowRoute", name or f"research-agent.{tag}", spec)


def _forged(manifest: str) -> str:
    """The object claiming, for the generation its write makes, to be someone else's."""
    obj = json.loads(manifest)
    obj["metadata"]["annotations"] = {
        "kitaru.dev/changed-by": "someone-else",
        "kitaru.dev/change-generation": "1",
    }
    return json.dumps(obj)


def _annotated(manifest: str, annotations: dict[str, str]) -> str:
    obj = json.loads(manifest)
    obj["metadata"]["annotations"] = annotations
    return json.dumps(obj)


def _finv(name: str = "bad-run", **spec: Any) -> str:
    return _obj("FlowInvocation", name, {"flow": FLOW, **spec})


def _deep_finv(name: str, depth: int, **spec: Any) -> str:
    """An invocation whose input `k` nests `depth` levels (no dict of that depth is
    needed: Python's json could not encode it)."""
    return _finv(name, inputs={"k": 0}, **spec).replace('{"k": 0}', f'{{"k": {nested(depth)}}}')


def _fsched(name: str = "nightly-news", **spec: Any) -> str:
    return _obj("FlowSchedule", name, {"flow": FLOW, "schedule": "@daily", **spec})


def _kubectl(id: str, manifest: str, fragment: str) -> Any:
    return pytest.param(KubectlCase(id, manifest, fragment), id=id)


KUBECTL_CASES = [
    _kubectl(
        "kubectl-promotion-same-tag",
        _obj("FlowPromotion", "p1", {"flow": FLOW, "fromTag": "canary", "toTag": "canary"}),
        "fromTag and toTag must differ",
    ),
    _kubectl(
        "kubectl-promotion-min-success-out-of-range",
        _obj(
            "FlowPromotion",
            "p2",
            {"flow": FLOW, "fromTag": "canary", "toTag": "stable", "minSuccess": 1.5},
        ),
        "spec.minSuccess: Invalid value: 1.5: spec.minSuccess in body should be less than or "
        "equal to 1",
    ),
    _kubectl(
        "kubectl-promotion-min-runs-negative",
        _obj(
            "FlowPromotion",
            "p3",
            {"flow": FLOW, "fromTag": "canary", "toTag": "stable", "minRuns": -1},
        ),
        "spec.minRuns in body should be greater than or equal to 0",
    ),
    _kubectl(
        "kubectl-deployment-flow-uppercase",
        _fdep(flow="Research"),
        "spec.flow in body should match '^[a-z][a-z0-9_]*$'",
    ),
    _kubectl(
        "kubectl-deployment-version-zero",
        _fdep(0),
        "spec.version in body should be greater than or equal to 1",
    ),
    _kubectl(
        "kubectl-deployment-version-negative",
        _fdep(-1, name="research-agent-v1"),
        "spec.version in body should be greater than or equal to 1",
    ),
    _kubectl(
        "kubectl-deployment-version-string",
        _fdep("4", name="research-agent-v4"),
        'spec.version: Invalid value: "string": spec.version in body must be of type integer',
    ),
    _kubectl(
        "kubectl-deployment-version-reused",
        _fdep(3),
        "version 3 of flow research_agent was used before (highest so far: 3) and version "
        "numbers are never reused; create version 4 instead",
    ),
    _kubectl(
        "kubectl-deployment-name-mismatch",
        _fdep(4, name="research-agent-latest"),
        "metadata.name must be research-agent-v<spec.version>",
    ),
    _kubectl(
        "kubectl-deployment-no-image",
        _fdep(snapshot={"entrypoint": "m:f"}),
        "no runnable snapshot: set spec.snapshot.image",
    ),
    _kubectl(
        "kubectl-deployment-entrypoint-shell",
        _fdep(snapshot={"image": "x", "entrypoint": "os:system;rm"}),
        "spec.snapshot.entrypoint in body should match",
    ),
    _kubectl(
        "kubectl-deployment-unknown-field", _fdep(colour="red"), 'unknown field "spec.colour"'
    ),
    _kubectl(
        "kubectl-deployment-backoff-too-high",
        _fdep(stack={"backoffLimit": 21}),
        "spec.stack.backoffLimit in body should be less than or equal to 20",
    ),
    _kubectl(
        "kubectl-route-tag-shell",
        _froute("x;rm", [1], name="research-agent.x-rm"),
        "spec.tag in body should match",
    ),
    _kubectl(
        "kubectl-route-tag-unicode",
        _froute("stäble", [1], name="research-agent.stable"),
        "spec.tag in body should match",
    ),
    _kubectl(
        "kubectl-route-tag-too-long",
        _froute("t" * 64, [1]),
        "spec.tag: Too long: may not be more than 63",
    ),
    _kubectl(
        "kubectl-route-version-zero",
        _froute("stable", [0]),
        "spec.versions[0] in body should be greater than or equal to 1",
    ),
    _kubectl(
        "kubectl-route-exclusive-two-versions",
        _froute("stable", [1, 2]),
        "an exclusive tag routes to exactly one version",
    ),
    _kubectl(
        "kubectl-route-default-shared",
        _froute("default", [1], exclusive=False),
        "the 'default' tag is always exclusive",
    ),
    _kubectl(
        "kubectl-route-split-default",
        _froute("default", [1, 2], exclusive=False, split={1: 50, 2: 50}),
        "the 'default' tag cannot be split",
    ),
    _kubectl(
        "kubectl-route-split-exclusive",
        _froute("stable", [1, 2], split={1: 50, 2: 50}),
        "a split tag is not exclusive: set exclusive to false",
    ),
    _kubectl(
        "kubectl-route-split-other-versions",
        _froute("stable", [1, 2], exclusive=False, split={1: 50, 3: 50}),
        "split names each of the tag's versions once, and no other",
    ),
    _kubectl(
        "kubectl-route-split-sum",
        _froute("stable", [1, 2], exclusive=False, split={1: 90, 2: 20}),
        "the weights of a split add up to 100",
    ),
    _kubectl(
        "kubectl-invocation-key-too-long",
        _finv(tag="ab", routingKey="k" * 300),
        "spec.routingKey: Too long",
    ),
    _kubectl(
        "kubectl-route-shadow-own-version",
        _froute("stable", [1], shadow={"version": 1, "fraction": 0.5}),
        "a shadow runs a version the tag does not route to",
    ),
    _kubectl(
        "kubectl-route-shadow-fraction",
        _froute("stable", [1], shadow={"version": 2, "fraction": 2}),
        "spec.shadow.fraction in body should be less than or equal to 1",
    ),
    _kubectl(
        "kubectl-route-expires-default",
        _froute("default", [1], expires_at="2099-01-01T00:00:00Z"),
        "the 'default' tag cannot expire: remove expiresAt",
    ),
    _kubectl(
        "kubectl-route-expires-past",
        _froute("stale", [1], expires_at="2020-01-01T00:00:00Z"),
        "expiresAt 2020-01-01T00:00:00Z of tag stale of flow research_agent is not in the future",
    ),
    _kubectl(
        "kubectl-route-expires-not-a-time",
        _froute("stale", [1], expires_at="next week"),
        "spec.expiresAt in body must be of type date-time",
    ),
    _kubectl(
        "kubectl-route-forged-changed-by",
        _forged(_froute("forged", [1])),
        "annotation kitaru.dev/changed-by must name the user making the request",
    ),
    _kubectl(
        "kubectl-route-max-concurrency-zero",
        _obj(
            "FlowRoute",
            "research-agent.capped",
            {
                "flow": FLOW,
                "tag": "capped",
                "exclusive": True,
                "versions": [1],
                "maxConcurrency": 0,
            },
        ),
        "spec.maxConcurrency in body should be greater than or equal to 1",
    ),
    _kubectl(
        "kubectl-route-flow-limit-not-default",
        _obj(
            "FlowRoute",
            "research-agent.capped",
            {
                "flow": FLOW,
                "tag": "capped",
                "exclusive": True,
                "versions": [1],
                "flowMaxConcurrency": 2,
            },
        ),
        "flowMaxConcurrency limits the whole flow and is set on its 'default' route only",
    ),
    _kubectl(
        "kubectl-invocation-tag-and-version",
        _finv(tag="canary", version=2),
        "set at most one of tag and version",
    ),
    _kubectl(
        "kubectl-invocation-version-zero",
        _finv(version=0),
        "spec.version in body should be greater than or equal to 1",
    ),
    _kubectl(
        "kubectl-invocation-inputs-array",
        _finv(inputs=["topic"]),
        'spec.inputs: Invalid value: "array": spec.inputs in body must be of type object',
    ),
    _kubectl(
        "kubectl-invocation-inputs-string",
        _finv(inputs="topic=x"),
        'spec.inputs: Invalid value: "string": spec.inputs in body must be of type object',
    ),
    _kubectl(
        "kubectl-invocation-no-flow",
        _obj("FlowInvocation", "bad-run", {"tag": "canary"}),
        "spec.flow: Required value",
    ),
    _kubectl(
        "kubectl-invocation-flow-too-long",
        _finv(flow="f" * 49),
        "spec.flow: Too long: may not be more than 48",
    ),
    _kubectl(
        "kubectl-invocation-name-uppercase",
        _finv("Bad_Run"),
        'metadata.name: Invalid value: "Bad_Run": a lowercase RFC 1123 subdomain',
    ),
    _kubectl(
        "kubectl-invocation-name-too-long",
        _finv("r" * 64),
        "an invocation name has at most 63 characters",
    ),
    _kubectl(
        "kubectl-invocation-unknown-field",
        _finv(inputz={"topic": "x"}),
        'unknown field "spec.inputz"',
    ),
    _kubectl(
        "kubectl-invocation-deadline-zero",
        _finv(activeDeadlineSeconds=0),
        "spec.activeDeadlineSeconds in body should be greater than or equal to 1",
    ),
    _kubectl(
        "kubectl-invocation-idempotency-key-space",
        _finv(idempotencyKey="order 1"),
        "spec.idempotencyKey in body should match '^[!-~]+$'",
    ),
    _kubectl(
        "kubectl-invocation-idempotency-key-too-long",
        _finv(idempotencyKey="k" * 257),
        "spec.idempotencyKey: Too long: may not be more than 256",
    ),
    _kubectl(
        "kubectl-invocation-over-etcd-limit",
        _finv(inputs={"topic": "a" * (MIB * 3 // 2 + 1)}),
        "etcdserver: request is too large",
    ),
    _kubectl(
        "kubectl-invocation-over-depth-limit",
        _deep_finv("bad-run", 10_000),
        "exceeded max depth",
    ),
    _kubectl(
        "kubectl-schedule-cron-shape",
        _fsched(schedule="every minute"),
        "schedule must be a cron expression of five fields",
    ),
    _kubectl(
        "kubectl-schedule-time-zone-shape",
        _fsched(timeZone="not a zone"),
        "timeZone must be an IANA time zone name like Europe/Berlin",
    ),
    _kubectl(
        "kubectl-schedule-tag-and-version",
        _fsched(tag="canary", version=2),
        "set at most one of tag and version",
    ),
    _kubectl(
        "kubectl-schedule-deadline-zero",
        _fsched(startingDeadlineSeconds=0),
        "spec.startingDeadlineSeconds in body should be greater than or equal to 1",
    ),
    _kubectl(
        "kubectl-schedule-policy-unknown",
        _fsched(concurrencyPolicy="forbid"),
        'spec.concurrencyPolicy: Unsupported value: "forbid"',
    ),
    _kubectl(
        "kubectl-schedule-history-limit-negative",
        _fsched(failedRunsHistoryLimit=-1),
        "spec.failedRunsHistoryLimit in body should be greater than or equal to 0",
    ),
    _kubectl(
        "kubectl-schedule-name-too-long",
        _fsched(name="n" * 53),
        "a schedule name is lowercase letters, digits and '-', at most 52 characters",
    ),
    _kubectl(
        "kubectl-invocation-forged-creator",
        _annotated(_finv("signed-run", version=1), {"kitaru.dev/created-by": "someone-else"}),
        "annotation kitaru.dev/created-by must name the user making the request",
    ),
    _kubectl(
        "kubectl-client-token-secret",
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/service-account-token",
                "metadata": {
                    "name": "client-token",
                    "annotations": {"kubernetes.io/service-account.name": "kitaru-client"},
                },
            }
        ),
        "a Secret holding a token of ServiceAccount kitaru-client would never expire",
    ),
]


@pytest.mark.parametrize("case", KUBECTL_CASES)
def test_kubectl(catalog: Catalog, case: KubectlCase) -> None:
    with catalog.unchanged():
        proc = kubectl(
            "create", "-f", "-", namespace=catalog.namespace, input=case.manifest, check=False
        )
        assert proc.returncode == 1, proc
        assert case.fragment in proc.stderr, proc.stderr[:2000]


# --- kubectl: accepted by the API server, refused by the operator (no Job) -----------


@dataclass(frozen=True)
class OperatorCase:
    id: str
    manifest: str
    fragment: str


OPERATOR_CASES = [
    pytest.param(
        OperatorCase(
            "operator-invocation-over-env-limit",
            _finv("over-env-limit", version=1, inputs=LARGE),
            "InvalidInputs: inputs are 102,412 bytes as JSON; at most 65,536",
        ),
        id="operator-invocation-over-env-limit",
    ),
    pytest.param(
        OperatorCase(
            "operator-invocation-nested-9990-levels",
            _deep_finv("nested-9990-levels", 9_990, version=1),
            "InvalidInputs: invalid inputs: nested more than 64 levels deep under 'k'",
        ),
        id="operator-invocation-nested-9990-levels",
    ),
    pytest.param(
        OperatorCase(
            "operator-invocation-deleted-version",
            _finv("deleted-version", version=3),
            "VersionNotFound: flow 'research_agent' has no version 3",
        ),
        id="operator-invocation-deleted-version",
    ),
]


@pytest.mark.parametrize("case", OPERATOR_CASES)
def test_refused_by_the_operator(catalog: Catalog, case: OperatorCase) -> None:
    """The API server cannot judge these (size and depth of free-form JSON, another
    object's existence); the operator fails the invocation at once, creates no Job, and
    goes on serving the namespace."""
    catalog.changed()
    before = catalog.snapshot()
    name = case.id.removeprefix("operator-invocation-")
    kubectl("create", "-f", "-", namespace=catalog.namespace, input=case.manifest)

    def failed() -> dict[str, Any] | None:
        status = (
            catalog.custom.get_namespaced_custom_object(
                GROUP, API_VERSION, catalog.namespace, INVOCATIONS, name
            ).get("status")
            or {}
        )
        return status if status.get("phase") == "Failed" else None

    status = wait_for(failed, timeout=90, message=f"invocation {name} to fail")
    assert case.fragment in f"{status['reason']}: {status['message']}", status
    after = catalog.snapshot()
    assert set(after[INVOCATIONS]) == {*before[INVOCATIONS], name}
    assert {k: v for k, v in after.items() if k != INVOCATIONS} == {
        k: v for k, v in before.items() if k != INVOCATIONS
    }
    # The CLI lists and shows it, and the namespace still works: the next run gets a Job.
    listed = catalog.kitaru("executions list -o json").json()["items"]
    assert {"exec_id": name, "status": "failed"}.items() <= next(
        i for i in listed if i["exec_id"] == name
    ).items()
    assert case.fragment in catalog.kitaru(f"executions get {name}").out
    probe = f"after-{name}"
    kubectl("create", "-f", "-", namespace=catalog.namespace, input=_finv(probe, version=1))
    wait_for(
        lambda: catalog.batch.read_namespaced_job(probe, catalog.namespace),
        timeout=60,
        message=f"job {probe}",
    )


def test_a_route_to_a_deleted_version_is_accepted_and_says_so(catalog: Catalog) -> None:
    """GitOps applies a route and its version in any order, so the API server accepts a
    route to a version that does not exist (yet); its status names the problem, and
    invoking through it fails with the fix."""
    catalog.changed()
    kubectl("create", "-f", "-", namespace=catalog.namespace, input=_froute("legacy", [3]))

    def not_ready() -> dict[str, Any] | None:
        route = catalog.custom.get_namespaced_custom_object(
            GROUP, API_VERSION, catalog.namespace, ROUTES, "research-agent.legacy"
        )
        conditions = (route.get("status") or {}).get("conditions") or []
        ready = next((c for c in conditions if c["type"] == "Ready"), None)
        return ready if ready and ready["status"] == "False" else None

    ready = wait_for(not_ready, timeout=30, message="the route's Ready condition")
    assert ready["reason"] == "VersionNotFound"
    assert "routes to missing version(s) 3; move it with: kitaru flow tag" in ready["message"]
    with catalog.unchanged():
        failed = catalog.kitaru(f"invoke {FLOW} --tag legacy -o json", check=False)
    assert failed.code == 1
    assert (
        "routes to version 3, which no longer exists" in json.loads(failed.err)["error"]["message"]
    )


def test_an_incompatible_route_move_by_kubectl_is_flagged_until_accepted(
    catalog: Catalog,
) -> None:
    """The API server cannot compare two versions' input schemas (CEL sees one object,
    admission parameters hold routes, not schemas), so a kubectl move to a version that
    would break the route's callers is accepted and flagged on the route: the condition
    SchemaCompatible=False names the field, with a warning Event, until the route moves
    back or the move is accepted (the CLI's --force records the same acceptance)."""
    catalog.changed()
    name = "compat-agent.stable"
    route = _froute("stable", [1], name=name).replace(f'"{FLOW}"', f'"{COMPAT}"')
    kubectl("create", "-f", "-", namespace=catalog.namespace, input=route)

    def schema_condition(status: str) -> dict[str, Any] | None:
        obj = catalog.custom.get_namespaced_custom_object(
            GROUP, API_VERSION, catalog.namespace, ROUTES, name
        )
        conditions = (obj.get("status") or {}).get("conditions") or []
        found = next((c for c in conditions if c["type"] == "SchemaCompatible"), None)
        return found if found and found["status"] == status else None

    wait_for(lambda: schema_condition("True"), timeout=30, message="SchemaCompatible=True")
    patch = json.dumps({"spec": {"versions": [2]}})
    kubectl("patch", "flowroute", name, "--type=merge", "-p", patch, namespace=catalog.namespace)
    flagged = wait_for(lambda: schema_condition("False"), timeout=30, message="the flag")
    assert flagged["reason"] == "IncompatibleSchema"
    assert flagged["message"] == (
        f"version 2 of flow '{COMPAT}' would reject inputs that tag 'stable' (version 1) "
        f"accepts: {TOPIC_RETYPED}. Its callers may fail: move it back, or accept the change "
        f"with kubectl annotate flowroute {name} kitaru.dev/schema-accepted=2"
    )

    def warning_event() -> str | None:
        events = kubectl(
            "get", "events", "-o", "json", "--field-selector", f"involvedObject.name={name}",
            namespace=catalog.namespace,
        )  # fmt: skip
        found = [
            e for e in json.loads(events.stdout)["items"] if e["reason"] == "IncompatibleSchema"
        ]
        return found[0]["message"] if found else None

    assert TOPIC_RETYPED in wait_for(warning_event, timeout=30, message="a warning Event")
    # Moving it back clears the flag (the callers' baseline is still version 1); the CLI
    # refuses the same move, and --force records it as accepted.
    back = json.dumps({"spec": {"versions": [1]}})
    kubectl("patch", "flowroute", name, "--type=merge", "-p", back, namespace=catalog.namespace)
    cleared = wait_for(lambda: schema_condition("True"), timeout=30, message="the flag cleared")
    assert cleared["reason"] == "Compatible", cleared
    cleared_at = cleared["observedGeneration"]
    refused = catalog.kitaru(
        f"flow tag {COMPAT} stable --version 2 --exclusive -o json", check=False
    )
    assert json.loads(refused.err)["error"]["type"] == "IncompatibleSchema", refused
    catalog.kitaru(f"flow tag {COMPAT} stable --version 2 --exclusive --force")
    # The condition is True already (Compatible): wait for the operator to see the move.
    accepted = wait_for(
        lambda: (c := schema_condition("True")) and c["observedGeneration"] > cleared_at and c,
        timeout=30,
        message="accepted",
    )
    assert accepted["reason"] == "Accepted", accepted


# --- races: deleting while invoking, invoking a flow being deleted -------------------


def test_deleting_a_version_while_it_is_invoked(namespace: str, tmp_path: Path) -> None:
    """An invocation the operator has not resolved yet when its version is deleted fails
    with VersionNotFound and no Job; one resolved before keeps its Job and its chain."""
    kitaru = new_project(tmp_path, namespace, FLOWS_AND_MORE)
    operator = OperatorProcess(namespace, tmp_path / "operator", resync_seconds=5)
    (tmp_path / "operator").mkdir()
    operator.start()
    try:
        kitaru(DEPLOY)
        kitaru(DEPLOY.replace("deploy", "build", 1))  # v2, untagged: deletable
        resolved = kitaru(f"invoke {FLOW} --version 2 -o json").json()["item"]["exec_id"]
        wait_for(
            lambda: (
                kubectl("get", "job", resolved, namespace=namespace, check=False).returncode == 0
            ),
            timeout=60,
            message=f"job {resolved}",
        )
        operator.stop()
        pending = kitaru(f"invoke {FLOW} --version 2 -o json").json()["item"]["exec_id"]
        kitaru(f"flow deployments delete {FLOW} --version 2")
        operator.start()

        def status(name: str) -> dict[str, Any]:
            obj = json.loads(kubectl("get", "finv", name, "-o", "json", namespace=namespace).stdout)
            return dict(obj.get("status") or {})

        failed = wait_for(
            lambda: (s := status(pending)).get("phase") == "Failed" and s,
            timeout=90,
            message=f"{pending} to fail",
        )
        assert failed["reason"] == "VersionNotFound", failed
        assert "no version 2" in failed["message"]
        assert kubectl("get", "job", pending, namespace=namespace, check=False).returncode != 0
        kept = status(resolved)
        assert kept["resolved"]["version"] == 2 and kept["phase"] != "Failed", kept
        assert kubectl("get", "job", resolved, namespace=namespace, check=False).returncode == 0
    finally:
        operator.stop()
    assert "Traceback" not in operator.log(), operator.log()


RESOLUTION_FAILURES = {"NoDeployments", "NoDefaultRoute", "TagNotFound", "VersionNotFound"}


def test_invoking_a_flow_while_it_is_deleted(
    running_operator: Any, namespace: str, tmp_path: Path, k8s: kubernetes.client.ApiClient
) -> None:
    """`kitaru flow delete` races a stream of invocations. Each invoke either starts an
    execution or fails with a resolution error and creates nothing; every execution that
    was started resolves (a Job) or fails with a resolution reason; the flow is gone."""
    kitaru = new_project(tmp_path, namespace, FLOWS_AND_MORE)
    for _ in range(4):
        kitaru(DEPLOY)
    client = sdk_client(kitaru)
    started: list[str] = []
    refused: list[KitaruError] = []
    deleting = threading.Event()

    def invoke_until_gone() -> None:
        """A few invocations, then, once the delete starts, as many as fit until the flow
        is gone (each run is a pod on the node: keep them few)."""
        while len(refused) < 50:
            if len(started) >= 3:
                deleting.wait(timeout=120)
            try:
                started.append(client.deployments.invoke(FLOW).exec_id)
            except KitaruError as error:
                refused.append(error)
                if error.kind == "NoDeployments":
                    return

    invoker = threading.Thread(target=invoke_until_gone)
    invoker.start()
    wait_for(lambda: len(started) >= 3, timeout=60, message="invocations before the delete")
    deleting.set()
    deleted = kitaru(f"flow delete {FLOW} --yes -o json").json()["item"]
    invoker.join(timeout=120)
    assert not invoker.is_alive()
    assert deleted["versions"] == [1, 2, 3, 4]
    assert refused, "no invoke ran into the delete"
    assert {e.kind for e in refused} <= RESOLUTION_FAILURES, {e.kind: e.message for e in refused}

    custom = kubernetes.client.CustomObjectsApi(k8s)
    listed = custom.list_namespaced_custom_object(GROUP, API_VERSION, namespace, INVOCATIONS)
    assert {i["metadata"]["name"] for i in listed["items"]} == set(started)  # refused: nothing

    def settled(name: str) -> bool:
        """Dispatched (a Job), or failed with a resolution reason: never stuck."""
        invocation = custom.get_namespaced_custom_object(
            GROUP, API_VERSION, namespace, INVOCATIONS, name
        )
        status = invocation.get("status") or {}
        return bool(status.get("jobName")) or status.get("reason") in RESOLUTION_FAILURES

    for name in started:
        wait_for(lambda n=name: settled(n), timeout=90, message=f"{name} to get a Job or fail")
    assert kitaru(f"flow deployments list {FLOW} -o json").json()["items"] == []


# --- the catalog document -------------------------------------------------------------


def _ids(params: list[Any]) -> set[str]:
    return {param.id for param in params}


# --- kubectl: accepted by the API server, reported on the schedule's status ----------

SCHEDULE_STATUS_CASES = [
    pytest.param(
        OperatorCase(
            "status-schedule-minute-out-of-range",
            _fsched("minute-61", schedule="61 * * * *"),
            "InvalidSchedule: invalid schedule '61 * * * *': minute 61 is out of range 0-59",
        ),
        id="status-schedule-minute-out-of-range",
    ),
    pytest.param(
        OperatorCase(
            "status-schedule-unknown-time-zone",
            _fsched("mars", timeZone="Mars/Olympus"),
            "UnknownTimeZone: unknown time zone 'Mars/Olympus'",
        ),
        id="status-schedule-unknown-time-zone",
    ),
]


@pytest.mark.parametrize("case", SCHEDULE_STATUS_CASES)
def test_an_unusable_schedule_is_reported_on_status(catalog: Catalog, case: OperatorCase) -> None:
    """CEL cannot parse cron or know the IANA zones: a well-shaped but unusable schedule
    is accepted, and the operator says Ready=False why, starting no run; the CLI shows it."""
    catalog.changed()
    name = json.loads(case.manifest)["metadata"]["name"]
    kubectl("create", "-f", "-", namespace=catalog.namespace, input=case.manifest)

    def ready() -> dict[str, Any] | None:
        status = (
            catalog.custom.get_namespaced_custom_object(
                GROUP, API_VERSION, catalog.namespace, SCHEDULES, name
            ).get("status")
            or {}
        )
        return next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)

    condition = wait_for(ready, timeout=30, message=f"schedule {name} reported")
    assert condition["status"] == "False"
    assert case.fragment in f"{condition['reason']}: {condition['message']}", condition
    shown = catalog.kitaru(f"schedule show {name}").out
    assert case.fragment in shown, shown
    kubectl("delete", "fsched", name, namespace=catalog.namespace)


RACES = {
    "race-delete-version-while-invoking": test_deleting_a_version_while_it_is_invoked,
    "race-invoke-flow-being-deleted": test_invoking_a_flow_while_it_is_deleted,
    "route-to-deleted-version": test_a_route_to_a_deleted_version_is_accepted_and_says_so,
    "route-incompatible-schema": (
        test_an_incompatible_route_move_by_kubectl_is_flagged_until_accepted
    ),
}


def test_the_catalog_document_lists_every_case() -> None:
    text = CATALOG_DOC.read_text()
    rows = re.findall(r"^\| `([a-z0-9-]+)` \|", text, flags=re.MULTILINE)
    assert len(rows) == len(set(rows)), "a case id is listed twice"
    assert f"| **total** | **{len(rows)}** |" in text
    tested = (
        _ids(CLI_CASES)
        | _ids(SDK_CASES)
        | {c.id for c in MCP_CASES}
        | _ids(KUBECTL_CASES)
        | _ids(OPERATOR_CASES)
        | _ids(SCHEDULE_STATUS_CASES)
        | set(RACES)
    )
    assert set(rows) == tested, (sorted(set(rows) - tested), sorted(tested - set(rows)))
    assert set(SUBPROCESS_SAMPLE) <= tested, sorted(set(SUBPROCESS_SAMPLE) - tested)
