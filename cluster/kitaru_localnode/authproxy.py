"""oauth2-proxy, the security tier's authenticating proxy in front of the dashboard.

`python -m kitaru_localnode.authproxy [--dir DIR]` builds it (`build.sh authproxy`,
once per version), makes an image of the binary (`images.build_auth_proxy`), imports
the image into the node of the running cluster in DIR, and prints as JSON where the
binary is (tests run it on the host) and the image pinned by digest (the chart's
sidecar runs it in a pod).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from kitaru_localnode import images, node
from kitaru_localnode.cluster import DEFAULT_DIR, ClusterError, State
from kitaru_localnode.paths import BUILD_SCRIPT

BINARY = "oauth2-proxy"


def binary_path() -> Path:
    """The oauth2-proxy binary, built once per version into the cache."""
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "authproxy"], stdout=subprocess.PIPE, text=True
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise ClusterError(f"building oauth2-proxy failed ({BUILD_SCRIPT} authproxy)")
    return Path(proc.stdout.strip().splitlines()[-1]) / BINARY


def version_of(binary: Path) -> str:
    """The version the binary was built as (`build.sh` stamps the pinned one)."""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True)
    # "oauth2-proxy v7.15.3 (built with go1.26.8)"
    return out.stdout.split()[1]


def prepare(state: State) -> dict[str, str]:
    """The binary, and its image imported into the node of the cluster in `state`."""
    if node.node_owner() != state.root:
        raise ClusterError(f"the cluster in {state.root} does not hold the node: start it first")
    binary = binary_path()
    try:
        built = images.build_auth_proxy(binary, version_of(binary))
        node.import_image(state.node, built)
    except (images.ImageBuildError, RuntimeError) as err:
        raise ClusterError(str(err)) from err
    return {"binary": str(binary), "image": built.pinned}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kitaru_localnode.authproxy")
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help="the cluster's state directory"
    )
    args = parser.parse_args(argv)
    try:
        prepared = prepare(State(args.dir))
    except ClusterError as err:
        print(f"authproxy failed: {err}", file=sys.stderr)
        return 1
    print(json.dumps(prepared))
    return 0


if __name__ == "__main__":
    sys.exit(main())
