"""What ships where (docs/ARCHITECTURE.md, Packages): a flow run needs only the
distribution's own dependencies (what the runner image installs), the local cluster's
tooling only `[localnode]`."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    names = set()
    for requirement in requirements:
        match = re.match(r"[A-Za-z0-9_.-]+", requirement)
        assert match, requirement
        names.add(canonical(match.group()))
    return names - {canonical(PROJECT["name"])}  # `dev` names the other extras


BASE = requirement_names(PROJECT["dependencies"])
EXTRAS = {name: requirement_names(reqs) for name, reqs in PROJECT["optional-dependencies"].items()}


def modules_of(distributions: set[str]) -> set[str]:
    """The top-level modules the installed `distributions` provide."""
    return {
        module
        for module, dists in packages_distributions().items()
        if {canonical(d) for d in dists} & distributions
    }


FLOW = """from kitaru import flow


@flow
def echo(topic: str) -> str:
    return topic
"""

# Run the runner as the Job does, with every module of an extra made unimportable.
BLOCKED_RUN = """
import json, runpy, sys
blocked = set(json.loads(sys.argv[1]))

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ImportError(f"{name} belongs to an extra, not to a flow run")
        return None

sys.meta_path.insert(0, Blocker())
sys.argv = ["kitaru.runner"]
runpy.run_module("kitaru.runner", run_name="__main__")
"""


def test_a_flow_run_imports_nothing_from_the_extras(tmp_path: Path) -> None:
    extras_only = set().union(*EXTRAS.values()) - BASE
    blocked = modules_of(extras_only)
    assert {"click", "kubernetes", "kopf", "mcp", "yaml", "cryptography"} <= blocked
    (tmp_path / "flows_mod.py").write_text(FLOW)
    termination = tmp_path / "termination-log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
        "KITARU_FLOW": "echo",
        "KITARU_ENTRYPOINT": "flows_mod:echo",
        "KITARU_INPUTS": json.dumps({"topic": "durable agents"}),
        "KITARU_INPUT_SCHEMA": json.dumps({"type": "object"}),
        "KITARU_TERMINATION_PATH": str(termination),
    }
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, json.dumps(sorted(blocked))],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(termination.read_text()) == {"ok": True, "result": "durable agents"}


def test_the_runner_image_installs_the_bare_package() -> None:
    dockerfile = (REPO / "cli" / "Dockerfile.runner").read_text()
    installs = re.findall(r"pip install [^\n]*", dockerfile)
    assert installs == ["pip install --disable-pip-version-check . \\"], installs


def third_party_imports(package: Path) -> set[str]:
    """Top-level names of every module imported anywhere in `package` (function-level
    imports included), less the standard library and the package itself."""
    names = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.partition(".")[0])
    return names - set(sys.stdlib_module_names) - {package.name}


def test_the_local_cluster_tooling_needs_only_its_extra() -> None:
    imported = third_party_imports(REPO / "cluster" / "kitaru_localnode")
    allowed = modules_of(BASE | EXTRAS["localnode"])
    assert imported, "the AST walk found no third-party import at all"
    assert imported <= allowed, f"not in [localnode]: {sorted(imported - allowed)}"
