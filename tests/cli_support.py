"""Running the `kitaru` CLI as a user would: a subprocess in a project directory, with
the local cluster's kubeconfig and the test namespace as the project; or the same
command line in this process (`InProcessKitaru`: click's CliRunner on `kitaru.cli.main`,
in the same directory and environment), where the claim is the command's answer and not
the executable's start."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mcp import Client, ClientSession, StdioServerParameters, stdio_client
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


def command_argv(command: str) -> list[str]:
    """A shell-quoted command line (the part after `kitaru`, which may be given) as argv."""
    argv = shlex.split(command.replace("\\\n", " "))
    return argv[1:] if argv and argv[0] == "kitaru" else argv


class Kitaru:
    """`kitaru …` in a project directory."""

    def __init__(self, project: Path, env: dict[str, str]) -> None:
        self.project = project
        self.env = env

    def __call__(self, command: str, *, check: bool = True, timeout: float = 120) -> Result:
        """Run a shell-quoted command line (the part after `kitaru`)."""
        argv = command_argv(command)
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


class InProcessKitaru(Kitaru):
    """`kitaru …` run by click's CliRunner in this process: the same command tree, exit
    codes, stdout and stderr, in the project directory with exactly the user's
    environment (os.environ is swapped for the call), without an interpreter start per
    command. `python` still runs a subprocess."""

    def __call__(self, command: str, *, check: bool = True, timeout: float = 120) -> Result:
        from kitaru.cli.main import main

        argv = command_argv(command)
        # Exactly the user's environment: what this process has beyond it is unset.
        env: dict[str, str | None] = {k: None for k in os.environ if k not in self.env}
        env.update(self.env)
        with contextlib.chdir(self.project):
            result = CliRunner().invoke(main, argv, env=env, prog_name="kitaru")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception  # a crash, not an answer: show its traceback
        outcome = Result(result.exit_code, result.stdout, result.stderr)
        if check and outcome.code != 0:
            raise AssertionError(
                f"kitaru {command} failed ({outcome.code}):\n{outcome.out}{outcome.err}"
            )
        return outcome


def new_project(
    root: Path,
    namespace: str,
    flow_source: str = RESEARCH_FLOW,
    *,
    runner: type[Kitaru] = Kitaru,
) -> Kitaru:
    """A fresh `kitaru init` project holding flows/research.py; `runner` says how its
    commands run (a subprocess each, or `InProcessKitaru`)."""
    project = root / "project"
    (project / "flows").mkdir(parents=True)
    (project / "flows" / "research.py").write_text(flow_source)
    kitaru = runner(project, user_env(namespace, root))
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


@contextmanager
def as_user(cwd: Path, env: dict[str, str]) -> Iterator[None]:
    """This process in `cwd` with exactly the environment `env`, for code that reads
    both when it runs (the MCP server's client, made on its first call, is made anew)."""
    from kitaru import mcp_server

    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k not in env]:
            patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, value)
        patch.chdir(cwd)
        patch.setattr(mcp_server, "_client", None)
        yield


@asynccontextmanager
async def mcp_in_process(cwd: Path, env: dict[str, str]) -> AsyncIterator[ClientSession]:
    """The server `kitaru mcp` runs, built in this process and reached over the mcp
    package's in-memory streams (JSON-RPC with the initialize handshake), as the user
    of `cwd` and `env`: the same tools and errors without a process per session."""
    from kitaru.mcp_server import build_server

    with as_user(cwd, env):
        async with Client(build_server(), mode="legacy") as client:
            yield client.session
