"""Running the `kitaru` CLI as a user would: a subprocess in a project directory, with
the local cluster's kubeconfig and the test namespace as the project."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters, stdio_client
from support import KUBECONFIG

RESEARCH_FLOW = """from kitaru import flow


@flow
def research_agent(topic: str) -> str:
    print(f"researching {topic}")
    return f"notes on {topic}"
"""

# The research flow with an optional input, and a flow whose name is not a valid one.
FLOWS_AND_MORE = """from kitaru import flow


@flow
def research_agent(topic: str, depth: int = 1) -> str:
    return f"notes on {topic}"


@flow
def BadName(topic: str) -> str:
    return topic
"""


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out if self.code == 0 else self.err)


def kitaru_argv() -> list[str]:
    exe = shutil.which("kitaru")
    return [exe] if exe else [sys.executable, "-m", "kitaru.cli.main"]


def user_env(namespace: str, home: Path) -> dict[str, str]:
    """A clean user environment: kubeconfig credentials, the namespace as the project."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KITARU_")}
    env.update(
        KUBECONFIG=str(KUBECONFIG),
        KITARU_PROJECT=namespace,
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_CACHE_HOME=str(home / "cache"),
    )
    return env


class Kitaru:
    """`kitaru …` in a project directory."""

    def __init__(self, project: Path, env: dict[str, str]) -> None:
        self.project = project
        self.env = env

    def __call__(self, command: str, *, check: bool = True, timeout: float = 120) -> Result:
        """Run a shell-quoted command line (the part after `kitaru`)."""
        argv = shlex.split(command.replace("\\\n", " "))
        if argv and argv[0] == "kitaru":
            argv = argv[1:]
        proc = subprocess.run(
            [*kitaru_argv(), *argv],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kitaru {command} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )
        return result

    def python(self, code: str, timeout: float = 180) -> Result:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise AssertionError(f"python failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return Result(proc.returncode, proc.stdout, proc.stderr)


def new_project(root: Path, namespace: str, flow_source: str = RESEARCH_FLOW) -> Kitaru:
    """A fresh `kitaru init` project holding flows/research.py."""
    project = root / "project"
    (project / "flows").mkdir(parents=True)
    (project / "flows" / "research.py").write_text(flow_source)
    kitaru = Kitaru(project, user_env(namespace, root))
    kitaru("init")
    return kitaru


@asynccontextmanager
async def mcp_session(cwd: Path, env: dict[str, str]) -> AsyncIterator[ClientSession]:
    """`kitaru mcp` spawned by the SDK's stdio client, as an assistant would."""
    argv: list[str] = [*kitaru_argv(), "mcp"]
    params = StdioServerParameters(command=argv[0], args=argv[1:], env=env, cwd=cwd)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session
