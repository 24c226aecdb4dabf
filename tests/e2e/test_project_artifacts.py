"""A whole project deployed and run on the node: a package with a subpackage whose flow
imports both a relative and an absolute sibling; what git ignores never ships; the same
project twice reuses its ConfigMap. Then the artifacts as a user gets them: `make dist`
builds the wheel, the sdist and the chart, and the wheel, installed into a fresh venv
(no checkout on its path), deploys and invokes the same project."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import kubernetes
import pytest
from cli_support import Kitaru, user_env
from kitaru.core.jobs import SOURCE_MANIFEST_KEY
from kitaru.core.names import LABEL_FLOW
from support import REPO, TEST_NAMESPACE_LABELS, OperatorProcess, bin_dir, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

FLOW = "agent"
SECRET = "hunter2-never-shipped"
PROJECT = {
    ".gitignore": "secret.env\n*.log\n",
    "secret.env": f"API_KEY={SECRET}\n",
    "debug.log": "noise\n",
    "myproject/__init__.py": "",
    "myproject/prompts.py": 'P = "be brief"\n',
    "myproject/tools/__init__.py": "from .search import search\n",
    "myproject/tools/search.py": "def search(query):\n    return f'found {query}'\n",
    "myproject/flow.py": f"""from kitaru import flow
from .tools import search
from myproject.prompts import P


@flow
def {FLOW}(topic: str) -> str:
    return f"{{search(topic)}}, {{P}}"
""",
}
SHIPPED = [
    ".gitignore",
    "myproject/__init__.py",
    "myproject/flow.py",
    "myproject/prompts.py",
    "myproject/tools/__init__.py",
    "myproject/tools/search.py",
]
TOPIC = '{"topic": "routing"}'  # every deploy's inputs: the schema guard sees no change
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


@dataclass
class Project:
    namespace: str
    kitaru: Kitaru
    core: kubernetes.client.CoreV1Api

    def source_config_maps(self) -> list[kubernetes.client.V1ConfigMap]:
        selector = f"{LABEL_FLOW}={FLOW}"
        return self.core.list_namespaced_config_map(self.namespace, label_selector=selector).items


@pytest.fixture(scope="module")
def project(
    k8s: kubernetes.client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Project]:
    """A git work tree holding the package (the secret and the log git-ignored), made a
    Kitaru project, with an operator watching its namespace."""
    namespace = f"t-project-{uuid.uuid4().hex[:6]}"
    core = kubernetes.client.CoreV1Api(k8s)
    core.create_namespace(
        kubernetes.client.V1Namespace(
            metadata=kubernetes.client.V1ObjectMeta(name=namespace, labels=TEST_NAMESPACE_LABELS)
        )
    )
    root = tmp_path_factory.mktemp("project")
    operator = OperatorProcess(namespace, tmp_path_factory.mktemp("operator"), resync_seconds=5)
    try:
        wait_for(lambda: core.read_namespaced_service_account("default", namespace), timeout=30)
        operator.start()
        directory = root / "repo"
        for path, content in PROJECT.items():
            (directory / path).parent.mkdir(parents=True, exist_ok=True)
            (directory / path).write_text(content)
        subprocess.run(["git", "init", "-q", str(directory)], check=True)
        kitaru = Kitaru(directory, user_env(namespace, root))
        kitaru("init")
        yield Project(namespace, kitaru, core)
    finally:
        operator.stop()
        core.delete_namespace(namespace, propagation_policy="Background")
    assert "Traceback" not in operator.log(), operator.log()


def test_a_package_with_a_subpackage_runs_with_both_imports(project: Project) -> None:
    deploy = f"deploy myproject/flow.py:{FLOW} --input '{TOPIC}' -o json"
    first = project.kitaru(deploy).json()["item"]
    assert first["entrypoint"] == f"myproject.flow:{FLOW}"
    [config_map] = project.source_config_maps()
    assert config_map.metadata.name == first["source_config_map"]
    manifest = config_map.data.pop(SOURCE_MANIFEST_KEY)
    assert [line.partition("  ")[2] for line in manifest.splitlines()] == SHIPPED
    assert sorted(config_map.data) == sorted(p.replace("/", "__") for p in SHIPPED)
    assert SECRET not in json.dumps(config_map.to_dict(), default=str), (
        "a git-ignored file was shipped"
    )

    run = project.kitaru(f"invoke {FLOW} --wait --timeout 180 -o json", timeout=240)
    assert run.json()["item"]["result"] == "found routing, be brief"

    # Nothing changed: the next version reuses the same content-addressed ConfigMap.
    second = project.kitaru(deploy).json()["item"]
    assert second["version"] == first["version"] + 1
    assert second["source_config_map"] == first["source_config_map"]
    assert len(project.source_config_maps()) == 1


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make dist` into a directory of its own: the wheel, the sdist, the chart."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        ["make", "-s", "dist", f"DIST={out}"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def tracked_package_files() -> set[str]:
    """Every file of the three import packages the checkout tracks, as the wheel names it."""
    listed = subprocess.run(
        [
            "git",
            "-C",
            str(REPO),
            "ls-files",
            "cli/kitaru",
            "operator/kitaru_operator",
            "cluster/kitaru_localnode",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {path.split("/", 1)[1] for path in listed}


def test_make_dist_builds_the_wheel_the_sdist_and_the_chart(dist: Path) -> None:
    names = sorted(p.name for p in dist.iterdir())
    assert names == [
        f"kitaru-operator-{VERSION}.tgz",
        f"kitaru_k8s-{VERSION}-py3-none-any.whl",
        f"kitaru_k8s-{VERSION}.tar.gz",
    ]
    with zipfile.ZipFile(dist / f"kitaru_k8s-{VERSION}-py3-none-any.whl") as wheel:
        shipped = set(wheel.namelist())
    missing = tracked_package_files() - shipped
    assert not missing, f"not in the wheel: {sorted(missing)}"
    helm = str(bin_dir() / "helm")
    chart = str(dist / f"kitaru-operator-{VERSION}.tgz")
    subprocess.run([helm, "lint", chart], check=True, capture_output=True)
    rendered = subprocess.run(
        [helm, "template", "kitaru", chart], check=True, capture_output=True, text=True
    ).stdout
    assert f"ghcr.io/kitaru-k8s/operator:{VERSION}" in rendered
    assert f"ghcr.io/kitaru-k8s/runner:{VERSION}" in rendered


WHEELHOUSE = Path.home() / ".cache" / "kitaru-k8s" / "wheelhouse"


def install_wheel(wheel: Path, venv: Path) -> Path:
    """`pip install WHEEL[cli]` into a fresh venv: offline from the wheelhouse cache when it
    holds every dependency, else the wheelhouse is filled from the index once."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    requirement = f"{wheel}[cli]"
    offline = [
        *pip,
        "install",
        "--no-compile",
        "--no-index",
        "--find-links",
        str(WHEELHOUSE),
        requirement,
    ]
    if subprocess.run(offline, capture_output=True).returncode != 0:
        WHEELHOUSE.mkdir(parents=True, exist_ok=True)
        subprocess.run([*pip, "wheel", "--wheel-dir", str(WHEELHOUSE), requirement], check=True)
        for own in WHEELHOUSE.glob("kitaru_k8s-*"):  # the dependencies only, never ours
            own.unlink()
        subprocess.run(offline, check=True)
    return venv / "bin" / "kitaru"


def test_the_wheel_in_a_fresh_venv_deploys_and_invokes(
    project: Project, dist: Path, tmp_path: Path
) -> None:
    kitaru_exe = install_wheel(dist / f"kitaru_k8s-{VERSION}-py3-none-any.whl", tmp_path / "venv")
    env = {k: v for k, v in project.kitaru.env.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{kitaru_exe.parent}{os.pathsep}{env['PATH']}"

    def kitaru(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(kitaru_exe), *args],
            cwd=project.kitaru.project,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    where = subprocess.run(
        [str(kitaru_exe.parent / "python"), "-c", "import kitaru; print(kitaru.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(tmp_path / "venv")), where
    assert "Deploy a flow from source" in kitaru("--help").stdout
    deploy = kitaru("deploy", f"myproject/flow.py:{FLOW}", "--input", TOPIC, "-o", "json")
    info = json.loads(deploy.stdout)["item"]
    assert info["runner_image"] == f"ghcr.io/kitaru-k8s/runner:{VERSION}"
    run = kitaru(
        "invoke",
        FLOW,
        "--version",
        str(info["version"]),
        "--input",
        '{"topic": "wheels"}',
        "--wait",
        "--timeout",
        "180",
        "-o",
        "json",
    )
    assert json.loads(run.stdout)["item"]["result"] == "found wheels, be brief"
