"""The CLI without a cluster: command surface, fast start, errors before any request."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from kitaru.cli.main import main

# DESIGN §4 and the product page, word for word.
COMMANDS = [
    "init",
    "deploy",
    "build",
    "invoke",
    "flow tag",
    "flow untag",
    "flow list",
    "flow show",
    "flow delete",
    "flow deployments list",
    "flow deployments show",
    "flow deployments delete",
    "flow deployments curl",
    "flow deployments logs",
    "executions list",
    "executions get",
    "executions logs",
    "executions wait",
    "executions cancel",
    "login",
    "status",
    "info",
    "auth token",
    "mcp",
]


def _command(path: str) -> click.Command:
    command: click.Command = main
    for word in path.split():
        assert isinstance(command, click.Group)
        found = command.commands.get(word)
        assert found is not None, f"missing command: kitaru {path}"
        command = found
    return command


@pytest.mark.parametrize("path", COMMANDS)
def test_every_command_exists_with_output_option(path: str) -> None:
    command = _command(path)
    if path != "mcp":
        assert "--output" in {opt for p in command.params for opt in p.opts}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No connection at all: no KITARU_* settings, no kubeconfig, an empty config home."""
    return {
        "KITARU_SERVER_URL": "",
        "KITARU_AUTH_TOKEN": "",
        "KITARU_PROJECT": "",
        "KITARU_SERVICE_ACCOUNT": "",
        "KITARU_CA_FILE": "",
        "KUBECONFIG": str(tmp_path / "no-kubeconfig"),
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }


def run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys\n"
        "from kitaru.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('kubernetes', 'pydantic', 'jsonschema', 'yaml', 'kopf', 'mcp')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout


def test_missing_connection_fails_fast_naming_what_to_set(env: dict[str, str]) -> None:
    code, out, err = run(env, "flow", "list", "-o", "json")
    assert code == 1
    assert out == ""
    error = json.loads(err)
    assert error["command"] == "flow list"
    assert error["error"]["type"] == "KitaruConnectionError"
    for setting in ("KITARU_SERVER_URL", "KITARU_PROJECT", "kitaru login"):
        assert setting in error["error"]["message"]


def test_root_output_option_applies_to_subcommands(env: dict[str, str]) -> None:
    code, _, err = run(env, "-o", "json", "executions", "list")
    assert code == 1
    assert json.loads(err)["command"] == "executions list"


def test_deploy_needs_kitaru_init(env: dict[str, str], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(env, "deploy", "flows/research.py:research_agent", "-o", "json")
    assert code == 1
    error = json.loads(err)["error"]
    assert error["type"] == "NotAProject"
    assert "kitaru init" in error["message"]


def test_init_creates_the_marker_found_from_subdirectories(
    env: dict[str, str], tmp_path: Path, monkeypatch
) -> None:
    from kitaru.client.source import find_project_root

    monkeypatch.chdir(tmp_path)
    code, out, _ = run(env, "init")
    assert code == 0
    assert "Initialized a Kitaru project" in out
    assert (tmp_path / ".kitaru").is_dir()
    (tmp_path / "flows" / "deep").mkdir(parents=True)
    assert find_project_root(tmp_path / "flows" / "deep") == tmp_path
    code, out, _ = run(env, "init", "-o", "json")
    assert json.loads(out)["item"]["created"] is False


@pytest.mark.parametrize("bad", ["[1]", "nope", '"x"'])
def test_bad_input_is_rejected_before_any_request(env: dict[str, str], bad: str) -> None:
    code, _, err = run(env, "invoke", "research_agent", "--input", bad, "-o", "json")
    assert code == 1
    assert json.loads(err)["error"]["type"] == "InvalidInputs"


def test_login_saves_the_connection_privately_and_info_masks_it(env: dict[str, str]) -> None:
    code, out, _ = run(
        env,
        "login",
        "https://kitaru.example.com",
        "--api-key",
        "kat_abc123",
        "--project",
        "production",
    )
    assert code == 0, out
    saved = Path(env["XDG_CONFIG_HOME"]) / "kitaru" / "connection.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text())["token"] == "kat_abc123"

    code, out, _ = run(env, "info", "-o", "json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)["item"]["connection"]}
    assert rows["server"]["value"] == "https://kitaru.example.com"
    assert rows["project"]["value"] == "production"
    assert rows["auth token"]["value"] == "********"
    assert "kat_abc123" not in out
    assert rows["server"]["source"].startswith("kitaru login")

    code, out, _ = run({**env, "KITARU_PROJECT": "other"}, "info")
    assert "env KITARU_PROJECT" in out
    assert "kat_abc123" not in out


def test_auth_token_with_a_bearer_token_and_no_service_account_explains(
    env: dict[str, str],
) -> None:
    bearer = {
        **env,
        "KITARU_SERVER_URL": "https://127.0.0.1:1",
        "KITARU_AUTH_TOKEN": "kat_secret_value",
        "KITARU_PROJECT": "p",
    }
    code, out, err = run(bearer, "auth", "token")
    assert code == 1
    assert out == ""
    assert "KITARU_SERVICE_ACCOUNT" in err
    assert "kat_secret_value" not in err


def test_unreachable_server_is_a_short_error(env: dict[str, str]) -> None:
    unreachable = {
        **env,
        "KITARU_SERVER_URL": "https://127.0.0.1:1",
        "KITARU_AUTH_TOKEN": "t",
        "KITARU_PROJECT": "p",
    }
    code, _, err = run(unreachable, "flow", "list")
    assert code == 1
    assert err.startswith("Error: cannot reach the API server https://127.0.0.1:1")
    assert len(err) < 200


@pytest.mark.parametrize(
    ("args", "command", "fragment"),
    [
        (["invoke", "f", "--version", "abc"], "invoke", "'abc' is not a valid integer"),
        (["invoke", "f", "--bogus"], "invoke", "No such option '--bogus'"),
        (["flow", "deployments", "prune", "f", "--keep", "-1"], "flow deployments prune", "x>=0"),
        (["auth", "token", "--duration", "5"], "auth token", "600<=x<=86400"),
        (["flow", "tag", "f", "stable"], "flow tag", "Missing option '--version'"),
        (["executions", "list", "--status", "lost"], "executions list", "'lost' is not one of"),
    ],
)
def test_usage_errors_exit_1_with_the_json_envelope(
    env: dict[str, str], args: list[str], command: str, fragment: str
) -> None:
    code, out, err = run(env, *args, "-o", "json")
    assert (code, out) == (1, "")
    error = json.loads(err)
    assert error["command"] == command
    assert error["error"]["type"] == "UsageError"
    assert fragment in error["error"]["message"]

    code, out, err = run(env, *args)
    assert (code, out) == (1, "")
    assert "Usage: " in err and fragment in err


def test_help_and_version_still_exit_0(env: dict[str, str]) -> None:
    assert run(env, "--help")[0] == 0
    assert run(env, "invoke", "--help")[0] == 0
    code, out, _ = run(env, "--version")
    assert code == 0 and out.startswith("kitaru, version")
