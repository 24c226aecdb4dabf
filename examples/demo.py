"""`make demo`: the product page's producer/consumer story on the local cluster.

Applies `crds/` when missing, starts the operator for namespace `kitaru-demo` unless
one is already running there, then runs each command of the story through the real
`kitaru` CLI and the Python consumer through `KitaruClient`, printing what happened.
The operator it started is stopped at the end; the namespace is left for inspection
(and recreated by the next run, so the story always starts at v1).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kitaru.core.manifests import build_deployment

NAMESPACE = "kitaru-demo"
REPO = Path(__file__).resolve().parents[1]

FLOW = """from kitaru import flow


@flow
def research_agent(topic: str) -> str:
    print(f"researching {topic}")
    return f"notes on {topic}"
"""

STORY = [
    (
        "Producer: deploy the first version (it gets `default`)",
        """kitaru deploy flows/research.py:research_agent --input '{"topic": "durable agents"}'""",
    ),
    (
        "Producer: deploy a canary candidate",
        """kitaru deploy flows/research.py:research_agent --tag canary --exclusive """
        """--input '{"topic": "durable agents"}'""",
    ),
    ("Producer: inspect the versions", "kitaru flow deployments list research_agent"),
    (
        "Producer: promote the canary to the stable route",
        "kitaru flow tag research_agent stable --version 2 --exclusive",
    ),
    (
        "Producer: add a shared benchmark label",
        "kitaru flow tag research_agent benchmark --version 2",
    ),
    (
        "Consumer (CLI): invoke the stable route and wait",
        "kitaru invoke research_agent --tag stable "
        """--input '{"topic": "deployment routing"}' --wait""",
    ),
]

CONSUMER = """from kitaru import KitaruClient

handle = KitaruClient().deployments.invoke(
    flow="research_agent",
    tag="stable",
    inputs={"topic": "deployment routing"},
)
print(handle.exec_id)
print(handle.wait(timeout=300))
"""


def step(title: str, command: str, cwd: Path, env: dict[str, str]) -> None:
    print(f"\n== {title}\n$ {command}", flush=True)
    argv = shlex.split(command)
    if argv[0] == "kitaru":
        argv = [*_kitaru(), *argv[1:]]
    done = subprocess.run(argv, cwd=cwd, env=env, text=True, capture_output=True)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"demo step failed: {command}")


def _kitaru() -> list[str]:
    exe = shutil.which("kitaru")
    return [exe] if exe else [sys.executable, "-m", "kitaru.cli.main"]


def kubectl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", *args], text=True, capture_output=True, check=check)


def prepare_cluster() -> None:
    """CRDs applied, the demo namespace present."""
    if kubectl("get", "crd", "flowdeployments.kitaru.dev", check=False).returncode != 0:
        print("Applying crds/", flush=True)
        kubectl("apply", "-f", str(REPO / "crds"))
        kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    if kubectl("get", "namespace", NAMESPACE, check=False).returncode == 0:
        print(f"Deleting namespace {NAMESPACE} left by an earlier demo (the story starts at v1)")
        kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=180s")
    kubectl("create", "namespace", NAMESPACE)
    wait_for_admission()


# A version the admission policies check (a server-side dry run stores nothing).
PROBE = json.dumps(build_deployment("probe", 1, entrypoint="m:f", image="probe"))


def wait_for_admission(timeout: float = 60) -> None:
    """Right after the API server starts (or the CRDs are new) its admission policies
    cannot resolve their FlowRoute parameters for a few seconds and deny every write;
    wait until they evaluate."""
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(
            ["kubectl", "create", "--dry-run=server", "-n", NAMESPACE, "-f", "-"],
            input=PROBE,
            text=True,
            capture_output=True,
            check=False,
        )
        if done.returncode == 0 or time.monotonic() > deadline:
            return
        time.sleep(0.5)


def operator_running() -> bool:
    """An operator already watching the demo namespace (by its command line)."""
    done = subprocess.run(["ps", "-eo", "args"], text=True, capture_output=True, check=False)
    return any("kitaru_operator" in line and NAMESPACE in line for line in done.stdout.splitlines())


def start_operator(log: Path) -> subprocess.Popen[bytes]:
    print(f"Starting the operator for namespace {NAMESPACE} (log: {log})", flush=True)
    handle = log.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "kitaru_operator", "--namespace", NAMESPACE, "--metrics-port", "0"],
        stdout=handle,
        stderr=subprocess.STDOUT,
    )


def main() -> None:
    if not os.environ.get("KUBECONFIG"):
        os.environ["KUBECONFIG"] = str(REPO / ".cluster" / "kubeconfig")
    prepare_cluster()
    log = Path(tempfile.gettempdir()) / "kitaru-demo-operator.log"
    operator = None if operator_running() else start_operator(log)
    try:
        with tempfile.TemporaryDirectory(prefix="kitaru-demo-") as tmp:
            project = Path(tmp)
            (project / "flows").mkdir()
            (project / "flows" / "research.py").write_text(FLOW)
            env = {k: v for k, v in os.environ.items() if not k.startswith("KITARU_")}
            env["KITARU_PROJECT"] = NAMESPACE
            print(f"Project {project} with flows/research.py:\n{FLOW}")
            step("Producer: make this directory a Kitaru project", "kitaru init", project, env)
            for title, command in STORY:
                step(title, command, project, env)
            print("\n== Consumer (Python): KitaruClient().deployments.invoke(...)")
            print(CONSUMER)
            done = subprocess.run(
                [sys.executable, "-c", CONSUMER],
                cwd=project,
                env=env,
                text=True,
                capture_output=True,
            )
            sys.stdout.write(done.stdout)
            sys.stderr.write(done.stderr)
            if done.returncode != 0:
                raise SystemExit("the Python consumer failed")
            step("Results: every execution", "kitaru executions list", project, env)
            step("Routes of the flow", "kitaru flow show research_agent", project, env)
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(timeout=30)
    print(f"\nDone. Inspect with: kubectl get kitaru -n {NAMESPACE}")


if __name__ == "__main__":
    main()
