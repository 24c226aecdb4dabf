"""Helpers of the GitOps tier: a team's git repository made from examples/gitops (edited
and pushed as a person would, with the git CLI), and Flux's GitRepository and
Kustomization taken from examples/gitops/flux/ and pointed at it.
"""

from __future__ import annotations

import copy
import datetime
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from kitaru.core.jobs import source_sha256
from support import REPO, get, kubectl, wait_for

EXAMPLE = REPO / "examples" / "gitops"
FLUX_EXAMPLE = EXAMPLE / "flux" / "team-a.yaml"
FLUX_NAMESPACE = "flux-system"
# The example's intervals are minutes; the tier shortens them so that a sync, a retry
# and a minute at rest hold several reconciliations. Nothing else of the example changes.
TEST_INTERVALS = {"interval": "10s", "retryInterval": "5s", "timeout": "20s"}


def items(kind: str, namespace: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(
        kubectl("get", kind, "-o", "json", namespace=namespace).stdout
    )["items"]
    return listed


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            found: dict[str, Any] = cond
            return found
    return {}


def operator_ready(obj: dict[str, Any]) -> bool:
    """The operator's verdict: Ready True for the object's current generation."""
    status = obj.get("status") or {}
    return (
        condition(obj, "Ready").get("status") == "True"
        and status.get("observedGeneration") == obj["metadata"]["generation"]
    )


class GitRepo:
    """A working copy of the team's repository; each commit is pushed to the git server
    (branch main). The `hello` flow lives in examples/gitops/hello, the project's list
    of flows in examples/gitops/team-a, as in the example."""

    def __init__(self, work: Path, remote: str) -> None:
        self.work, self.remote = work, remote
        self.hello = work / "examples" / "gitops" / "hello"
        self.project = work / "examples" / "gitops" / "team-a"

    @classmethod
    def from_example(cls, work: Path, remote: str) -> GitRepo:
        shutil.copytree(EXAMPLE, work / "examples" / "gitops")
        repo = cls(work, remote)
        repo.git("init", "--quiet", "--initial-branch=main")
        repo.git("remote", "add", "origin", remote)
        repo.commit("The hello flow of examples/gitops")
        return repo

    def git(self, *args: str) -> str:
        proc = subprocess.run(
            ["git", "-c", "user.name=Team A", "-c", "user.email=team-a@example.com", *args],
            cwd=self.work,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if proc.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc.stdout.strip()

    def commit(self, message: str) -> str:
        """Commit everything and push; returns the commit's sha."""
        self.git("add", "--all")
        self.git("commit", "--quiet", "--message", message)
        self.git("push", "--quiet", "origin", "main")
        return self.git("rev-parse", "HEAD")

    # --- the edits a team makes to the hello flow ---------------------------------

    def _docs(self, name: str) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all((self.hello / name).read_text()) if d]

    def _write_docs(self, name: str, docs: list[dict[str, Any]]) -> None:
        (self.hello / name).write_text(yaml.safe_dump_all(docs, sort_keys=False))

    def _kustomization(self, folder: Path) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load((folder / "kustomization.yaml").read_text())
        return loaded

    def _write_kustomization(self, folder: Path, kustomization: dict[str, Any]) -> None:
        (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))

    def add_version(self, version: int, source: str) -> None:
        """A new immutable version hello-v<N>: its source file, its generated source
        ConfigMap and its FlowDeployment (a copy of the newest one, renumbered)."""
        (self.hello / f"v{version}").mkdir()
        (self.hello / f"v{version}" / "hello.py").write_text(source)
        kustomization = self._kustomization(self.hello)
        kustomization["configMapGenerator"].append(
            {"name": f"hello-source-v{version}", "files": [f"hello.py=v{version}/hello.py"]}
        )
        self._write_kustomization(self.hello, kustomization)
        docs = self._docs("deployments.yaml")
        new = copy.deepcopy(docs[-1])
        new["metadata"]["name"] = f"hello-v{version}"
        new["metadata"]["labels"]["kitaru.dev/version"] = str(version)
        new["spec"]["version"] = version
        new["spec"]["snapshot"]["source"]["configMap"] = f"hello-source-v{version}"
        new["spec"]["snapshot"]["source"]["sha256"] = source_sha256({"hello.py": source.encode()})
        self._write_docs("deployments.yaml", [*docs, new])

    def edit_version(self, version: int, inputs: dict[str, Any]) -> None:
        """Change a committed version's deploy-time inputs (which the API server refuses)."""
        docs = self._docs("deployments.yaml")
        for doc in docs:
            if doc["spec"]["version"] == version:
                doc["spec"]["inputs"] = inputs
        self._write_docs("deployments.yaml", docs)

    def remove_version(self, version: int) -> None:
        """Delete hello-v<N> and its source from the repository (routes untouched)."""
        shutil.rmtree(self.hello / f"v{version}")
        kustomization = self._kustomization(self.hello)
        kustomization["configMapGenerator"] = [
            g
            for g in kustomization["configMapGenerator"]
            if g["name"] != f"hello-source-v{version}"
        ]
        self._write_kustomization(self.hello, kustomization)
        docs = self._docs("deployments.yaml")
        self._write_docs("deployments.yaml", [d for d in docs if d["spec"]["version"] != version])

    def route(self, tag: str, *versions: int) -> None:
        """Point the route of `tag` at `versions`."""
        docs = self._docs("routes.yaml")
        (route,) = [d for d in docs if d["spec"]["tag"] == tag]
        route["spec"]["versions"] = list(versions)
        self._write_docs("routes.yaml", docs)

    def annotate_route(self, tag: str, key: str, value: str) -> None:
        docs = self._docs("routes.yaml")
        (route,) = [d for d in docs if d["spec"]["tag"] == tag]
        route["metadata"].setdefault("annotations", {})[key] = value
        self._write_docs("routes.yaml", docs)

    def remove_flow(self) -> None:
        """Take hello out of the project: its line in team-a and its folder."""
        kustomization = self._kustomization(self.project)
        kustomization["resources"] = [r for r in kustomization["resources"] if r != "../hello"]
        self._write_kustomization(self.project, kustomization)
        shutil.rmtree(self.hello)


def revision(sha: str) -> str:
    """How Flux names a commit of branch main."""
    return f"main@sha1:{sha}"


class FluxSync:
    """The example's GitRepository and Kustomization, named after the test's namespace,
    syncing the test's repository into that namespace. Without `health_checks` the
    Kustomization drops the example's healthCheckExprs: Flux then judges our objects
    with kstatus' generic rules alone."""

    def __init__(self, namespace: str, url: str) -> None:
        self.namespace, self.url, self.name = namespace, url, namespace
        self.health_checks = True

    def manifests(self) -> list[dict[str, Any]]:
        """examples/gitops/flux/team-a.yaml with this sync's names, URL, target
        namespace and the tier's intervals."""
        source, kustomization = (d for d in yaml.safe_load_all(FLUX_EXAMPLE.read_text()) if d)
        for obj in (source, kustomization):
            obj["metadata"] = {"name": self.name, "namespace": FLUX_NAMESPACE}
            obj["spec"]["interval"] = TEST_INTERVALS["interval"]
        source["spec"]["url"] = self.url
        kustomization["spec"]["sourceRef"]["name"] = self.name
        kustomization["spec"]["targetNamespace"] = self.namespace
        kustomization["spec"].update(TEST_INTERVALS)
        if not self.health_checks:
            del kustomization["spec"]["healthCheckExprs"]
        return [source, kustomization]

    def create(self) -> None:
        kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": self.manifests()}),
        )

    def first_sync(self, repo: GitRepo) -> dict[str, Any]:
        """Create the GitRepository and Kustomization; wait until the repository's head
        is applied."""
        self.create()
        return self.applied(repo.git("rev-parse", "HEAD"))

    def kustomization(self) -> dict[str, Any]:
        found = get("kustomization", self.name, FLUX_NAMESPACE)
        assert found is not None, f"Kustomization {self.name} is gone"
        return found

    def fetch(self) -> None:
        """Ask source-controller to fetch now (what `flux reconcile source git` and a
        push webhook do) rather than at its next interval."""
        now = datetime.datetime.now(datetime.UTC).isoformat()
        kubectl(
            "annotate",
            "--overwrite",
            f"gitrepository/{self.name}",
            f"reconcile.fluxcd.io/requestedAt={now}",
            namespace=FLUX_NAMESPACE,
        )

    def applied(self, sha: str, timeout: float = 120) -> dict[str, Any]:
        """Fetch now, then wait until the Kustomization is Ready at commit `sha` and
        return it."""
        self.fetch()

        def ready() -> dict[str, Any] | None:
            k = self.kustomization()
            status = k.get("status") or {}
            ready = condition(k, "Ready")
            if (
                status.get("lastAppliedRevision") == revision(sha)
                and ready.get("status") == "True"
                and status.get("observedGeneration") == k["metadata"]["generation"]
            ):
                return k
            return None

        return wait_for(ready, timeout=timeout, interval=0.5, message=f"Flux applied {sha}")

    def failed(self, sha: str, reason: str, timeout: float = 120) -> dict[str, Any]:
        """Fetch now, then wait until the Kustomization's last attempt at `sha` failed
        with `reason` (e.g. PruneFailed, HealthCheckFailed); return its Ready condition."""
        self.fetch()

        def failure() -> dict[str, Any] | None:
            k = self.kustomization()
            ready = condition(k, "Ready")
            attempted = (k.get("status") or {}).get("lastAttemptedRevision")
            if attempted == revision(sha) and ready.get("status") == "False":
                return ready if ready.get("reason") == reason else None
            return None

        return wait_for(
            failure, timeout=timeout, interval=0.5, message=f"Flux to fail at {sha}: {reason}"
        )

    def remove(self) -> None:
        """Suspend (so Flux's finalizer leaves the objects alone), then delete."""
        for kind in ("kustomization", "gitrepository"):
            kubectl(
                "patch",
                kind,
                self.name,
                "--type=merge",
                "-p",
                '{"spec": {"suspend": true}}',
                namespace=FLUX_NAMESPACE,
                check=False,
            )
            kubectl(
                "delete", kind, self.name, "--wait=false", namespace=FLUX_NAMESPACE, check=False
            )
