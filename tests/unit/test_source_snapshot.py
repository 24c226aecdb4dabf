"""What `kitaru deploy` ships from a project and how it is packed (kitaru.client.source,
kitaru.core.sources), and the runner reading it back (kitaru.runner)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kitaru.client.errors import InvalidArguments
from kitaru.client.source import (
    check_target_in,
    load_target,
    module_path,
    package_flow,
    project_files,
    read_project,
)
from kitaru.core.jobs import SOURCE_MANIFEST_KEY, source_key, source_manifest, source_sha256
from kitaru.core.manifests import build_source_config_map
from kitaru.core.sources import (
    DATA_LIMIT,
    ETCD_REQUEST_LIMIT,
    InvalidSource,
    SourceTooLarge,
    check_source,
    config_map_payload,
    data_size,
    path_problem,
    stored_size,
)
from kitaru.runner import SourceMismatch, read_source, run

# The API server's rule for a ConfigMap key (k8s.io/apimachinery IsConfigMapKey).
K8S_KEY = re.compile(r"[-._a-zA-Z0-9]+")

FLOW = """from kitaru import flow
from .tools import search
from myproject.prompts import P


@flow
def agent(topic: str) -> str:
    return f"{search(topic)} / {P}"
"""


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for path, content in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A `kitaru init` project: a package with a subpackage, the flow importing both."""
    root = tmp_path / "project"
    (root / ".kitaru").mkdir(parents=True)
    write(
        root,
        {
            "myproject/__init__.py": "",
            "myproject/flow.py": FLOW,
            "myproject/prompts.py": 'P = "be brief"\n',
            "myproject/tools/__init__.py": "def search(q):\n    return f'found {q}'\n",
        },
    )
    return root


# --- which files ship --------------------------------------------------------------------

# A tree with every kind of thing a project holds besides its code.
TREE: dict[str, str | bytes] = {
    ".gitignore": "secret.env\n*.log\n!keep.log\nbuild/\n/top-only.txt\n",
    ".kitaruignore": "data/\n*.ipynb\n",
    "secret.env": "API_KEY=hunter2\n",
    "run.log": "x",
    "keep.log": "kept",
    "build/out.txt": "built",
    "top-only.txt": "ignored at the top",
    "sub/top-only.txt": "kept below",
    "sub/.gitignore": "local.txt\n!run2.log\n",
    "sub/local.txt": "ignored by the nested file",
    "sub/run2.log": "re-included below",
    "data/big.csv": "1,2,3\n",
    "notes.ipynb": "{}",
    "myproject/__pycache__/flow.cpython-311.pyc": b"\x00",
    ".venv/pyvenv.cfg": "home = /usr/bin\n",
    ".venv/lib/site.py": "",
    "env-conda/conda-meta/history": "",
    "nested/.kitaru/state": "",
    "nested/flow.py": "",
    "logo.png": b"\x89PNG\r\n\x1a\n\x00\xff",
}
SHIPPED = [
    ".gitignore",
    ".kitaruignore",
    "keep.log",
    "logo.png",
    "myproject/__init__.py",
    "myproject/flow.py",
    "myproject/prompts.py",
    "myproject/tools/__init__.py",
    "sub/.gitignore",
    "sub/run2.log",
    "sub/top-only.txt",
]


def test_outside_git_the_gitignore_files_and_kitaruignore_decide(project: Path) -> None:
    write(project, TREE)
    assert project_files(project) == SHIPPED


def test_in_a_git_work_tree_git_decides_the_same(project: Path) -> None:
    write(project, TREE)
    git(project, "init", "-q")
    git(project, "add", "myproject", ".gitignore")
    git(project, "commit", "-qm", "code")
    assert project_files(project) == SHIPPED
    # A tracked file deleted in the work tree is not shipped; a tracked file that a later
    # .gitignore names still is (git would commit it).
    (project / "myproject" / "prompts.py").unlink()
    git(project, "add", "-f", "run.log")
    assert project_files(project) == sorted({*SHIPPED, "run.log"} - {"myproject/prompts.py"})


def test_a_project_inside_a_repository_ships_only_itself(tmp_path: Path, project: Path) -> None:
    write(tmp_path, {"outside.py": "", ".gitignore": "*.env\n"})
    write(project, {"secret.env": "k=v"})
    git(tmp_path, "init", "-q")
    assert project_files(project) == [
        "myproject/__init__.py",
        "myproject/flow.py",
        "myproject/prompts.py",
        "myproject/tools/__init__.py",
    ]


# --- refusals ----------------------------------------------------------------------------


def refusal(project: Path) -> InvalidArguments:
    with pytest.raises(InvalidArguments) as caught:
        read_project(project)
    return caught.value


def test_a_symlink_out_of_the_project_is_refused_never_followed(
    project: Path, tmp_path: Path
) -> None:
    (tmp_path / "secret").write_text("outside")
    (project / "link").symlink_to(tmp_path / "secret")
    error = refusal(project)
    assert error.kind == "InvalidSource"
    assert "'link' is a symlink to" in error.message and "outside the project" in error.message
    (project / "link").unlink()
    (project / "linked-dir").symlink_to(tmp_path)
    assert "outside the project" in refusal(project).message


def test_links_inside_the_project(project: Path) -> None:
    (project / "prompts-link.py").symlink_to(project / "myproject" / "prompts.py")
    assert read_project(project)["prompts-link.py"] == b'P = "be brief"\n'
    (project / "pkg-link").symlink_to(project / "myproject")
    assert "'pkg-link' is a folder" in refusal(project).message
    (project / "pkg-link").unlink()
    (project / "dangling").symlink_to(project / "gone.py")
    assert "cannot read 'dangling': No such file or directory" in refusal(project).message


def test_a_fifo_is_refused_not_read(project: Path) -> None:
    os.mkfifo(project / "pipe")
    assert "'pipe' is not a regular file" in refusal(project).message


AS_NOBODY = """
import os, sys
from pathlib import Path
import pathspec
from kitaru.client.source import read_project
if os.geteuid() == 0:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
try:
    read_project(Path(sys.argv[1]))
except Exception as e:
    print(e.kind, e.message)
"""


def test_an_unreadable_file_is_refused_naming_it() -> None:
    """As a user who may not read it (root reads everything: the check runs as nobody)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        (root / ".kitaru").mkdir(parents=True)
        write(root, {"flow.py": "", "private.key": "k"})
        os.chmod(tmp, 0o755)
        (root / "private.key").chmod(0o000)
        done = subprocess.run(
            [sys.executable, "-c", AS_NOBODY, str(root)], capture_output=True, text=True, check=True
        )
    assert done.stdout.startswith("InvalidSource cannot read 'private.key': Permission denied")


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ({"notes copy.txt": ""}, "cannot ship 'notes copy.txt': a ConfigMap key holds only"),
        ({"données.txt": ""}, "cannot ship 'données.txt'"),
        ({"..hidden": ""}, "a ConfigMap key cannot start with '..'"),
        ({"a" * 120 + "/" + "b" * 135: ""}, "a ConfigMap key holds at most 253"),
        ({"a/b.py": "", "a__b.py": ""}, "cannot ship both 'a/b.py' and 'a__b.py'"),
        ({SOURCE_MANIFEST_KEY: ""}, "cannot ship both 'the manifest' and '.kitaru__manifest'"),
    ],
)
def test_names_that_cannot_be_keys(project: Path, files: dict[str, str], fragment: str) -> None:
    write(project, dict(files))
    error = refusal(project)
    assert (error.kind, fragment in error.message) == ("InvalidSource", True), error.message
    assert ".kitaruignore" in error.message


def test_past_a_mebibyte_the_biggest_files_are_named_and_nothing_is_read(project: Path) -> None:
    write(project, {"data.json": "x" * 200_000, "model.bin": b"\x00" * 900_000})
    # A sparse 8 GiB file: reading it would take minutes; the refusal is on sizes.
    with (project / "dataset.parquet").open("wb") as sparse:
        sparse.truncate(8 * 1024**3)
    started = time.monotonic()
    error = refusal(project)
    assert time.monotonic() - started < 5
    assert error.kind == "SourceTooLarge"
    assert "a ConfigMap holds at most 1 MiB (1,048,576 bytes)" in error.message
    assert (
        "Biggest files: 'dataset.parquet' (8192.0 MiB), 'model.bin' (878.9 KiB), "
        "'data.json' (195.3 KiB)" in error.message
    )
    assert ".kitaruignore" in error.message and "run-data store" in error.message
    assert len(error.message) < 1000


def test_many_long_names_past_etcds_limit_are_refused() -> None:
    """Measured: 2 520 keys of 200 characters beside 1 MiB of values pass the API server's
    check and fail etcd's ("request is too large")."""
    sizes = {f"{i:04d}/" + "n" * 222 + ".py": 100 for i in range(2500)}
    assert data_size(sizes) <= DATA_LIMIT
    assert stored_size(sizes) > ETCD_REQUEST_LIMIT
    with pytest.raises(SourceTooLarge, match=r"2,500 files would be stored as about"):
        check_source(sizes)


def test_the_limits_are_exact_at_the_edge() -> None:
    one = {"flow.py": DATA_LIMIT - data_size({"flow.py": 0})}
    check_source(one)
    with pytest.raises(SourceTooLarge):
        check_source({"flow.py": one["flow.py"] + 1})


# --- the target, its module and its project ----------------------------------------------


@pytest.mark.parametrize(
    ("relative", "module"),
    [("flow.py", "flow"), ("pkg/sub/mod.py", "pkg.sub.mod"), ("pkg/__init__.py", "pkg")],
)
def test_module_paths(relative: str, module: str) -> None:
    assert module_path(Path(relative)) == module


@pytest.mark.parametrize("relative", ["my-flows/flow.py", "flows/2nd.py", "__init__.py"])
def test_files_no_import_can_name(relative: str) -> None:
    with pytest.raises(InvalidArguments, match="name its file and folders like Python modules"):
        module_path(Path(relative))


def test_a_package_with_relative_and_sibling_imports_loads_and_ships(project: Path) -> None:
    flow_obj, path, attr = load_target(f"{project}/myproject/flow.py:agent")
    assert flow_obj.func("x") == "found x / be brief"
    assert "myproject" not in sys.modules, "a deploy leaves no project module behind"
    assert str(project) not in sys.path
    package = package_flow(flow_obj, path, attr)
    assert package.entrypoint == "myproject.flow:agent"
    assert sorted(package.files) == [
        "myproject/__init__.py",
        "myproject/flow.py",
        "myproject/prompts.py",
        "myproject/tools/__init__.py",
    ]
    # A long-lived process (the MCP server) deploying again sees the edited files.
    write(project, {"myproject/prompts.py": 'P = "be thorough"\n'})
    assert load_target(f"{project}/myproject/flow.py:agent")[0].func("x") == "found x / be thorough"


def test_a_loaded_package_of_the_same_name_does_not_shadow_the_project(
    project: Path, tmp_path: Path
) -> None:
    other = tmp_path / "elsewhere" / "myproject"
    write(other, {"__init__.py": "", "prompts.py": 'P = "wrong"\n'})
    sys.path.insert(0, str(other.parent))
    try:
        import myproject.prompts  # type: ignore[import-not-found]

        assert myproject.prompts.P == "wrong"
        assert load_target(f"{project}/myproject/flow.py:agent")[0].func("q").endswith("brief")
        assert sys.modules["myproject.prompts"].P == "wrong", "the caller's module is back"
    finally:
        sys.path.remove(str(other.parent))
        for name in [n for n in sys.modules if n.partition(".")[0] == "myproject"]:
            del sys.modules[name]


def test_without_kitaru_init_nothing_ships(tmp_path: Path) -> None:
    write(tmp_path, {"flow.py": "from kitaru import flow\n"})
    with pytest.raises(InvalidArguments, match=r"is in no Kitaru project .* run `kitaru init`"):
        load_target(f"{tmp_path}/flow.py:f")


def test_a_target_outside_the_project(project: Path, tmp_path: Path) -> None:
    write(tmp_path, {"other/flow.py": FLOW})
    with pytest.raises(InvalidArguments, match="outside the Kitaru project") as caught:
        check_target_in(tmp_path / "other" / "flow.py", project)
    assert caught.value.kind == "TargetOutsideProject"
    check_target_in(project / "myproject" / "flow.py", project)
    # A link inside the project to a flow file elsewhere: the file is not the project's.
    (project / "linked.py").symlink_to(tmp_path / "other" / "flow.py")
    with pytest.raises(InvalidArguments, match="outside its project") as caught:
        load_target(f"{project}/linked.py:agent")
    assert caught.value.kind == "TargetOutsideProject"


def test_an_ignored_target_is_refused(project: Path) -> None:
    write(project, {".kitaruignore": "myproject/flow.py\n"})
    flow_obj, path, attr = load_target(f"{project}/myproject/flow.py:agent")
    with pytest.raises(InvalidArguments, match=r"is not shipped: git or \.kitaruignore ignores it"):
        package_flow(flow_obj, path, attr)


# --- the encoding, round trip through the runner ----------------------------------------

SEGMENT = st.from_regex(r"[-._a-zA-Z0-9]{1,12}", fullmatch=True).filter(
    lambda s: s not in (".", "..") and not s.startswith("..")
)
PATHS = st.lists(SEGMENT, min_size=1, max_size=4).map("/".join)
CONTENTS = st.one_of(st.binary(max_size=64), st.text(max_size=64).map(str.encode))


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(PATHS, CONTENTS, min_size=1, max_size=8))
def test_paths_and_contents_round_trip_through_the_configmap(files: dict[str, bytes]) -> None:
    try:
        check_source({path: len(content) for path, content in files.items()})
    except InvalidSource as refused:  # only two paths sharing a key may be refused here
        assert "cannot ship both" in refused.message
        assert len({source_key(p) for p in files}) < len(files)
        return
    data, binary = config_map_payload(files)
    keys = [*data, *binary]
    assert len(keys) == len(set(keys)) == len(files) + 1
    assert all(K8S_KEY.fullmatch(k) and len(k) <= 253 and not k.startswith("..") for k in keys)
    assert data[SOURCE_MANIFEST_KEY] == source_manifest(files)
    with tempfile.TemporaryDirectory() as mount:
        for key, text in data.items():
            Path(mount, key).write_text(text)
        for key, encoded in binary.items():
            Path(mount, key).write_bytes(base64.b64decode(encoded))
        assert read_source(Path(mount), [], source_sha256(files)) == files


@given(PATHS)
def test_an_accepted_path_is_a_valid_key(path: str) -> None:
    if path_problem(path) is None:
        key = source_key(path)
        assert K8S_KEY.fullmatch(key) and len(key) <= 253 and not key.startswith("..")


def test_text_goes_to_data_the_rest_to_binary_data() -> None:
    files = {"flow.py": "print('é')\n".encode(), "logo.png": b"\x89PNG\xff"}
    cm = build_source_config_map("agent", files, source_sha256(files))
    assert cm["data"]["flow.py"] == "print('é')\n"
    assert base64.b64decode(cm["binaryData"]["logo.png"]) == b"\x89PNG\xff"
    assert cm["data"][SOURCE_MANIFEST_KEY].splitlines()[1].endswith("  logo.png")


def mount_of(tmp_path: Path, files: dict[str, bytes]) -> Path:
    mount = tmp_path / "mount"
    mount.mkdir()
    data, binary = config_map_payload(files)
    for key, text in data.items():
        (mount / key).write_text(text)
    for key, encoded in binary.items():
        (mount / key).write_bytes(base64.b64decode(encoded))
    return mount


def test_the_runner_names_a_tampered_file(tmp_path: Path) -> None:
    files = {"pkg/a.py": b"A = 1\n", "pkg/b.py": b"B = 2\n"}
    mount = mount_of(tmp_path, files)
    (mount / source_key("pkg/b.py")).write_text("B = 3\n")
    with pytest.raises(SourceMismatch, match=r"'pkg/b.py' differs from the manifest"):
        read_source(mount, [], source_sha256(files))


@pytest.mark.parametrize("path", ["/etc/passwd", "../up.py", "a/../../b.py"])
def test_the_runner_refuses_paths_out_of_its_root(tmp_path: Path, path: str) -> None:
    manifest = f"{'0' * 64}  {path}\n"
    (tmp_path / SOURCE_MANIFEST_KEY).write_text(manifest)
    with pytest.raises(SourceMismatch, match="is not relative to the project root"):
        read_source(tmp_path, [], "0" * 64)


def test_the_runner_imports_the_package_from_the_project_root(
    project: Path, tmp_path: Path
) -> None:
    package = package_flow(*load_target(f"{project}/myproject/flow.py:agent"))
    mount = mount_of(tmp_path, dict(package.files))
    code, message = run(
        {
            "KITARU_SOURCE_DIR": str(mount),
            "KITARU_SOURCE_SHA256": package.sha256,
            "KITARU_ENTRYPOINT": package.entrypoint,
            "KITARU_INPUTS": json.dumps({"topic": "t"}),
        }
    )
    for name in [n for n in sys.modules if n.partition(".")[0] == "myproject"]:
        del sys.modules[name]
    assert (code, json.loads(message)) == (0, {"ok": True, "result": "found t / be brief"})


def test_the_runner_refuses_a_module_the_image_shadows(tmp_path: Path) -> None:
    """A folder without __init__.py named like an installed package loses to it (Python's
    rule for namespace packages): the runner says so instead of running the wrong code."""
    files = {"kitaru/flows.py": b"def f():\n    return 1\n"}
    mount = mount_of(tmp_path, files)
    code, message = run(
        {
            "KITARU_SOURCE_DIR": str(mount),
            "KITARU_SOURCE_SHA256": source_sha256(files),
            "KITARU_ENTRYPOINT": "kitaru.sdk:flow",
        }
    )
    payload = json.loads(message)
    assert (code, payload["type"]) == (1, "EntrypointNotFound")
    assert "not from the deployed source" in payload["message"]
