"""`make demo`'s script (examples/demo.py), as the README runs it: the whole product
story on the local cluster, with the operator it starts itself."""

from __future__ import annotations

import os
import subprocess
import sys

from support import KUBECONFIG, REPO, bin_dir


def test_the_demo_tells_the_whole_story() -> None:
    env = {
        **os.environ,
        "KUBECONFIG": str(KUBECONFIG),
        "PATH": f"{bin_dir()}{os.pathsep}{os.environ['PATH']}",
    }
    done = subprocess.run(
        [sys.executable, "examples/demo.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "Deployed research_agent v1" in out and "Deployed research_agent v2" in out
    assert out.count("notes on deployment routing") == 2  # the CLI and the Python consumer
    assert "benchmark (shared), canary, stable" in out
    assert out.rstrip().endswith("Inspect with: kubectl get kitaru -n kitaru-demo")
