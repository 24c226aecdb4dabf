"""Wait until Kitaru's admission policies answer: `python -m kitaru_localnode.admission`.

For some seconds after `kubectl apply -f crds/` (up to 27 s measured here when the CRDs
were replaced) the API server has not resolved the policies' parameter kind and refuses
every FlowDeployment create with "failed to configure policy: failed to find resource
referenced by paramKind". A step that installs the CRDs and then creates versions at
once (`make bench`, a script, a CI job) runs this in between. It asks for a server-side
dry run of a version's create (nothing is stored) until the answer is anything else.

The same loop with kubectl alone is in charts/kitaru-operator/README.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

PROBE = {
    "apiVersion": "kitaru.dev/v1alpha1",
    "kind": "FlowDeployment",
    "metadata": {"name": "admission-probe-v1"},
    "spec": {
        "flow": "admission_probe",
        "version": 1,
        "snapshot": {"image": "kitaru.local/probe:never-run", "entrypoint": "probe:flow"},
    },
}


def policies_answer(kubectl: str, namespace: str) -> bool:
    """Whether a valid version's create passes admission (a dry run: nothing is stored);
    before the CRDs serve or while the policies start, it is refused."""
    done = subprocess.run(
        [kubectl, "create", "--dry-run=server", "-n", namespace, "-f", "-"],
        input=json.dumps(PROBE),
        text=True,
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubectl", default="kubectl", help="the kubectl to run")
    parser.add_argument("--namespace", default="default", help="where the dry run asks")
    parser.add_argument("--timeout", type=float, default=120, help="seconds (default 120)")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.timeout
    while not policies_answer(args.kubectl, args.namespace):
        if time.monotonic() > deadline:
            print(f"admission policies still starting after {args.timeout:g} s", file=sys.stderr)
            return 1
        time.sleep(0.5)  # the API server's own pace: nothing to be woken by
    return 0


if __name__ == "__main__":
    sys.exit(main())
