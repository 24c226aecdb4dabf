"""One pod on the local node: volumes, environment, container processes and pod status.

Each pod gets a worker thread and a folder `<state>/pods/<ns>_<name>_<uid>/` holding its
volumes (`volumes/<name>/`), container logs (`<container>.log`, previous run in
`<container>.previous.log`) and termination message files. Containers run through the
`mountns.py` wrapper, which mounts the volumes at their mountPaths in a private mount
namespace. Restart backoff is shorter than a kubelet's (1 s doubling to 30 s) to keep
development loops fast.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes.client import ApiException

from kitaru_localnode import procs
from kitaru_localnode.images import ImageConfig, ImageNotMapped
from kitaru_localnode.kube import STRATEGIC

if TYPE_CHECKING:
    from kitaru_localnode.agent import Agent

log = logging.getLogger("kitaru-localnode")

MOUNTNS = Path(__file__).resolve().with_name("mountns.py")
MAX_GRACE_SECONDS = 10
MAX_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048

Pod = dict[str, Any]


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


class ConfigError(Exception):
    """A referenced ConfigMap/Secret/key is missing: retried, like a kubelet's
    CreateContainerConfigError."""


class Unsupported(Exception):
    """The pod asks for something this node cannot provide: the pod fails."""


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: `$$` escapes, unknown references stay as written."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR.sub(sub, value)


@dataclass
class Container:
    spec: dict[str, Any]
    init: bool
    proc: subprocess.Popen[bytes] | None = None
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    restart_count: int = 0
    next_start: float = 0.0
    done: bool = False  # terminated and not going to restart

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def exit_code(self) -> int | None:
        term = self.state.get("terminated")
        return int(term["exitCode"]) if term else None


class PodWorker(threading.Thread):
    def __init__(self, agent: Agent, pod: Pod) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.agent = agent
        self.pod = pod
        self.uid: str = meta["uid"]
        self.dir = agent.pods_dir / f"{meta['namespace']}_{meta['name']}_{self.uid}"
        self.wake = threading.Event()
        self._gone = False
        spec = pod["spec"]
        self.containers = [Container(c, True) for c in spec.get("initContainers", [])] + [
            Container(c, False) for c in spec["containers"]
        ]
        self.restart_policy: str = spec.get("restartPolicy", "Always")
        status = pod.get("status", {})
        self.start_time: str = status.get("startTime") or now_rfc3339()
        self.phase: str = status.get("phase", "Pending")
        self.reason: str | None = status.get("reason")
        self.message: str | None = status.get("message")
        self.transitions: dict[str, tuple[str, str]] = {}
        self.volumes: dict[str, Path] = {}
        self.tokens: list[tuple[Path, dict[str, Any], float]] = []  # file, source, refresh at
        self.prepared = False
        self.last_pushed: str = ""
        self._recover(status)

    # ---- events from the agent ------------------------------------------------------------

    def update(self, pod: Pod) -> None:
        self.pod = pod
        self.wake.set()

    def gone(self) -> None:
        """The pod object no longer exists: stop everything without further API calls."""
        self._gone = True
        self.wake.set()

    def log_path(self, container: str, previous: bool = False) -> Path | None:
        if not any(c.name == container for c in self.containers):
            return None
        return self.dir / (f"{container}.previous.log" if previous else f"{container}.log")

    def is_running(self, container: str) -> bool:
        return any(c.name == container and c.proc is not None for c in self.containers)

    # ---- lifecycle ------------------------------------------------------------------------

    def _recover(self, status: dict[str, Any]) -> None:
        """Adopt what the API server knows: after an agent restart the processes are gone."""
        previous = {
            s["name"]: s
            for s in status.get("initContainerStatuses", []) + status.get("containerStatuses", [])
        }
        for c in self.containers:
            old = previous.get(c.name)
            if not old:
                continue
            c.restart_count = int(old.get("restartCount", 0))
            c.last_state = old.get("lastState") or {}
            if "terminated" in old.get("state", {}):
                c.state = old["state"]
                c.done = not self._restarts(c)
        if self.phase in ("Succeeded", "Failed"):
            for c in self.containers:
                c.done = True
            # Finished before: nothing new to report, only its deletion to handle.
            self.last_pushed = json.dumps(self._status(), sort_keys=True)
            return
        lost = [
            c for c in self.containers if "running" in previous.get(c.name, {}).get("state", {})
        ]
        if lost and self.restart_policy == "Never":
            # What a kubelet reports for containers it lost track of.
            for c in lost:
                c.state = {
                    "terminated": {
                        "exitCode": 137,
                        "reason": "ContainerStatusUnknown",
                        "message": "The container could not be located when the pod was "
                        "terminated (the node agent restarted)",
                        "finishedAt": now_rfc3339(),
                    }
                }
            self._fail(None, None)

    def run(self) -> None:
        try:
            self._loop()
        except Exception as err:
            log.exception("pod %s failed in the node agent", self.pod_name)
            try:
                self._kill_all(0)
                self._fail("NodeAgentError", f"the local node agent failed: {err}")
                self._push()
            except Exception:
                log.exception("pod %s: could not report the failure", self.pod_name)
            self._wait_for_deletion()

    @property
    def pod_name(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"

    def _path(self) -> str:
        meta = self.pod["metadata"]
        return f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"

    def _wait_for_deletion(self) -> None:
        while not self._gone and not self.pod["metadata"].get("deletionTimestamp"):
            self.wake.wait(1)
            self.wake.clear()
        self._finish()

    def _loop(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        while True:
            self.wake.clear()
            if self._gone or self.pod["metadata"].get("deletionTimestamp"):
                self._finish()
                return
            if self.phase not in ("Succeeded", "Failed"):
                self._step()
            self._push()
            self.wake.wait(0.2 if self.phase not in ("Succeeded", "Failed") else 2)

    def _step(self) -> None:
        deadline = self.pod["spec"].get("activeDeadlineSeconds")
        if deadline is not None and time.time() > parse_time(self.start_time) + int(deadline):
            self._kill_all(0)
            self._fail(
                "DeadlineExceeded", "Pod was active on the node longer than the specified deadline"
            )
            return
        if not self.prepared:
            try:
                self._prepare_volumes()
                self.prepared = True
            except ConfigError as err:
                for c in self.containers:
                    c.state = {
                        "waiting": {"reason": "CreateContainerConfigError", "message": str(err)}
                    }
                self.wake.wait(1)
                return
            except Unsupported as err:
                self._fail("Unsupported", str(err))
                return
        self._refresh_tokens()
        init = [c for c in self.containers if c.init]
        pending_init = [c for c in init if not c.done]
        if pending_init:
            self._step_container(pending_init[0])
        else:
            for c in self.containers:
                if not c.init:
                    self._step_container(c)
        if self.phase in ("Succeeded", "Failed"):
            return
        main = [c for c in self.containers if not c.init]
        if all(c.done for c in main):
            failed = any(c.exit_code() != 0 for c in main)
            self.phase = "Failed" if failed else "Succeeded"
        elif not pending_init and any(
            "running" in c.state or c.restart_count or c.done for c in main
        ):
            self.phase = "Running"

    def _fail(self, reason: str | None, message: str | None) -> None:
        self.phase = "Failed"
        self.reason, self.message = reason, message
        for c in self.containers:
            c.done = True

    def _step_container(self, c: Container) -> None:
        if c.proc is None:
            if not c.done and time.monotonic() >= c.next_start:
                self._start(c)
            return
        code = c.proc.poll()
        if code is None:
            return
        self._record_exit(c, code)
        self._after_exit(c)

    def _restarts(self, c: Container) -> bool:
        """Whether a terminated container runs again (init containers only on failure)."""
        return (self.restart_policy == "Always" and not c.init) or (
            self.restart_policy != "Never" and c.exit_code() != 0
        )

    def _after_exit(self, c: Container) -> None:
        """Restart per restartPolicy, with backoff."""
        code = c.exit_code()
        if self._restarts(c):
            delay = min(30.0, 2.0 ** min(c.restart_count, 5))
            c.restart_count += 1
            c.next_start = time.monotonic() + delay
            c.last_state = c.state
            c.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {delay:.0f}s restarting failed container={c.name}",
                }
            }
        else:
            c.done = True
            if c.init and code != 0:
                self._fail(None, None)

    # ---- containers ------------------------------------------------------------------------

    def _start(self, c: Container) -> None:
        try:
            image = self.agent.images.lookup(c.spec.get("image", ""))
        except ImageNotMapped as err:
            c.state = {"waiting": {"reason": "ImageNotMapped", "message": str(err)}}
            if self.restart_policy == "Never":
                self._fail("ImageNotMapped", str(err))
            else:
                c.next_start = time.monotonic() + 5
            return
        try:
            env = self._env(c.spec, image)
        except ConfigError as err:
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(err)}}
            c.next_start = time.monotonic() + 1
            return
        command = [expand(a, env) for a in c.spec.get("command") or []]
        args = [expand(a, env) for a in c.spec.get("args") or []]
        argv = image.argv(command, args)
        cdir = self.dir / "containers" / c.name
        cdir.mkdir(parents=True, exist_ok=True)
        start_error = cdir / "start-error"
        start_error.unlink(missing_ok=True)
        if not argv:
            self._record_start_error(
                c,
                "no command specified (no command in the pod and no entrypoint/cmd for the image)",
            )
            return
        message_file = self._message_file(c)
        message_file.write_bytes(b"")
        mounts = [
            {
                "source": str(message_file),
                "target": c.spec.get("terminationMessagePath") or "/dev/termination-log",
            }
        ]
        for vm in c.spec.get("volumeMounts", []):
            source = self.volumes.get(vm["name"])
            if source is None:
                self._fail("Unsupported", f"volume {vm['name']!r} is not defined")
                return
            if vm.get("subPath"):
                source = source / vm["subPath"]
                if not source.exists():
                    source.mkdir(parents=True)
            mounts.append(
                {
                    "source": str(source),
                    "target": vm["mountPath"],
                    "readOnly": bool(vm.get("readOnly")),
                }
            )
        spec_file = cdir / "spec.json"
        spec_file.write_text(
            json.dumps(
                {
                    "mounts": mounts,
                    "workingDir": c.spec.get("workingDir") or image.working_dir or str(self.dir),
                    "argv": argv,
                    "startErrorFile": str(start_error),
                }
            )
        )
        logfile = self.dir / f"{c.name}.log"
        if logfile.exists():
            logfile.replace(self.dir / f"{c.name}.previous.log")
        with logfile.open("wb") as out:
            c.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(MOUNTNS), str(spec_file)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.dir,
                start_new_session=True,
            )
        procs.write_pidfile(self._pidfile(c), c.proc.pid)
        c.state = {"running": {"startedAt": now_rfc3339()}}
        log.info(
            "pod %s: started container %s (pid %d): %s", self.pod_name, c.name, c.proc.pid, argv
        )

    def _pidfile(self, c: Container) -> Path:
        return self.agent.pod_pids / f"{self.uid}_{c.name}.pid"

    def _message_file(self, c: Container) -> Path:
        return self.dir / f"{c.name}.termination-log"

    def _record_start_error(self, c: Container, message: str) -> None:
        stamp = now_rfc3339()
        c.state = {
            "terminated": {
                "exitCode": 128,
                "reason": "StartError",
                "message": message,
                "startedAt": stamp,
                "finishedAt": stamp,
            }
        }
        self._after_exit(c)

    def _record_exit(self, c: Container, code: int) -> None:
        assert c.proc is not None
        self._pidfile(c).unlink(missing_ok=True)
        c.proc = None
        exit_code = 128 - code if code < 0 else code  # killed by signal N => 128 + N
        started = c.state.get("running", {}).get("startedAt", now_rfc3339())
        start_error = self.dir / "containers" / c.name / "start-error"
        if exit_code == 128 and start_error.exists():
            reason, message = "StartError", start_error.read_text()
        else:
            reason = "Completed" if exit_code == 0 else "Error"
            message = self._termination_message(c, exit_code)
        term: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": started,
            "finishedAt": now_rfc3339(),
        }
        if message:
            term["message"] = message
        if code < 0:
            term["signal"] = -code
        c.state = {"terminated": term}

    def _termination_message(self, c: Container, exit_code: int) -> str:
        try:
            with self._message_file(c).open("rb") as f:
                data = f.read(MAX_MESSAGE_BYTES)
        except OSError:
            data = b""
        if (
            not data
            and exit_code != 0
            and (c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError")
        ):
            try:
                lines = (self.dir / f"{c.name}.log").read_bytes().splitlines(keepends=True)
            except OSError:
                lines = []
            data = b"".join(lines[-FALLBACK_LOG_LINES:])[-FALLBACK_LOG_BYTES:]
        return data.decode("utf-8", errors="replace")

    def _kill_all(self, grace: float) -> None:
        """SIGTERM every container's process group; SIGKILL whatever outlives `grace`."""
        running = [c for c in self.containers if c.proc is not None]
        files = [self._pidfile(c) for c in running]
        procs.stop_groups(files, grace=grace)
        for c in running:
            assert c.proc is not None
            try:
                code = c.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.proc.pid, signal.SIGKILL)
                code = c.proc.wait()
            self._record_exit(c, code)
            c.done = True

    def _finish(self) -> None:
        """Deletion: stop the containers, then remove the pod object for good."""
        meta = self.pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        self._kill_all(min(float(grace), MAX_GRACE_SECONDS))
        if not self._gone:
            try:
                self.agent.kube.request(
                    "DELETE",
                    self._path(),
                    {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
                )
            except ApiException as err:
                if err.status not in (404, 409):
                    log.warning("pod %s: delete failed: %s", self.pod_name, err)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.agent.forget(self.uid)
        log.info("pod %s: removed", self.pod_name)

    # ---- environment and volumes ---------------------------------------------------------

    def _get(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        """Data of a ConfigMap or Secret (decoded), None if optional and missing."""
        ns = self.pod["metadata"]["namespace"]
        plural = "configmaps" if kind == "ConfigMap" else "secrets"
        try:
            obj = self.agent.kube.request("GET", f"/api/v1/namespaces/{ns}/{plural}/{name}")
        except ApiException as err:
            if err.status == 404 and optional:
                return None
            # 403 happens briefly until the Node authorizer's graph knows this pod.
            raise ConfigError(f'{kind.lower()} "{name}" not found ({err.status})') from None
        if kind == "ConfigMap":
            data = dict(obj.get("data") or {})
            for key, value in (obj.get("binaryData") or {}).items():
                data[key] = base64.b64decode(value).decode("latin-1")
            return data
        return {
            k: base64.b64decode(v).decode("latin-1") for k, v in (obj.get("data") or {}).items()
        }

    def _field(self, path: str) -> str:
        pod = self.pod
        meta, spec = pod["metadata"], pod["spec"]
        simple = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": spec.get("nodeName", ""),
            "spec.serviceAccountName": spec.get("serviceAccountName", ""),
            "status.podIP": "127.0.0.1",
            "status.podIPs": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
            "status.hostIPs": "127.0.0.1",
        }
        if path in simple:
            return str(simple[path])
        m = re.fullmatch(r"metadata\.(labels|annotations)(?:\['(.*)'\])?", path)
        if m:
            values = meta.get(m.group(1)) or {}
            if m.group(2) is not None:
                return str(values.get(m.group(2), ""))
            return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
        raise Unsupported(f"fieldRef {path!r} is not supported by the local node")

    def _env(self, spec: dict[str, Any], image: ImageConfig) -> dict[str, str]:
        path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
        if image.project_python:
            path = f"{os.path.dirname(sys.executable)}:{path}"
        port = str(self.agent.apiserver_port)
        env = {
            "PATH": path,
            "HOME": os.environ.get("HOME", "/root"),
            "HOSTNAME": self.pod["metadata"]["name"],
            **image.env,
            # No kube-proxy here: in-cluster clients go straight to the loopback API server.
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://127.0.0.1:{port}",
        }
        for source in spec.get("envFrom", []):
            prefix = source.get("prefix", "")
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in source:
                    ref = source[key]
                    data = self._get(kind, ref["name"], bool(ref.get("optional")))
                    env.update({prefix + k: v for k, v in (data or {}).items()})
        for var in spec.get("env", []):
            name = var["name"]
            if "valueFrom" not in var:
                env[name] = expand(var.get("value", ""), env)
                continue
            src = var["valueFrom"]
            if "fieldRef" in src:
                env[name] = self._field(src["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in src:
                env[name] = self._resource(spec, src["resourceFieldRef"]["resource"])
            else:
                kind, ref = (
                    ("ConfigMap", src["configMapKeyRef"])
                    if "configMapKeyRef" in src
                    else ("Secret", src["secretKeyRef"])
                )
                data = self._get(kind, ref["name"], bool(ref.get("optional")))
                if data is not None and ref["key"] in data:
                    env[name] = data[ref["key"]]
                elif not ref.get("optional"):
                    raise ConfigError(f"couldn't find key {ref['key']} in {kind} {ref['name']}")
        return env

    @staticmethod
    def _resource(spec: dict[str, Any], resource: str) -> str:
        """Resource limits/requests as plain numbers; unset ones are the node's capacity."""
        kind, _, res = resource.partition(".")
        value = (spec.get("resources", {}).get(kind) or {}).get(res)
        if value is not None:
            return str(value)
        return (
            str(os.cpu_count() or 1)
            if res == "cpu"
            else str(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        )

    def _write_items(
        self,
        target: Path,
        data: dict[str, str],
        items: list[dict[str, Any]] | None,
        mode: int | None,
    ) -> None:
        selected = (
            [(i["key"], i["path"], i.get("mode")) for i in items]
            if items
            else [(k, k, None) for k in data]
        )
        for key, rel, item_mode in selected:
            if key not in data:
                raise ConfigError(f"key {key!r} not found")
            self._write_file(target / rel, data[key].encode("latin-1"), item_mode or mode)

    @staticmethod
    def _write_file(path: Path, content: bytes, mode: int | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(content)
        tmp.chmod(mode if mode is not None else 0o644)
        tmp.replace(path)

    def _request_token(self, source: dict[str, Any]) -> tuple[bytes, float]:
        meta = self.pod["metadata"]
        expiration = int(source.get("expirationSeconds", 3600))
        body = {
            "spec": {
                "audiences": [source["audience"]] if source.get("audience") else [],
                "expirationSeconds": expiration,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            }
        }
        try:
            sa = self.pod["spec"].get("serviceAccountName") or "default"
            resp = self.agent.kube.request(
                "POST", f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{sa}/token", body
            )
        except ApiException as err:
            raise ConfigError(
                f"service account token request failed: {err.status} {err.reason}"
            ) from None
        token = resp["status"]["token"]
        # Refresh at 80 % of the lifetime, as a kubelet does.
        return token.encode(), time.monotonic() + 0.8 * expiration

    def _refresh_tokens(self) -> None:
        for i, (path, source, refresh_at) in enumerate(self.tokens):
            if time.monotonic() >= refresh_at:
                token, refresh_at = self._request_token(source)
                self._write_file(path, token, 0o600)
                self.tokens[i] = (path, source, refresh_at)

    def _prepare_volumes(self) -> None:
        """Materialise every volume under `volumes/<name>/` in the pod folder."""
        self.tokens = []
        for vol in self.pod["spec"].get("volumes", []):
            name = vol["name"]
            target = self.dir / "volumes" / name
            if "hostPath" in vol:
                self.volumes[name] = Path(vol["hostPath"]["path"])
                continue
            target.mkdir(parents=True, exist_ok=True)
            if "emptyDir" in vol:
                pass
            elif "configMap" in vol or "secret" in vol:
                kind = "ConfigMap" if "configMap" in vol else "Secret"
                src = vol["configMap"] if kind == "ConfigMap" else vol["secret"]
                ref = src.get("name") or src.get("secretName")
                data = self._get(kind, ref, bool(src.get("optional")))
                self._write_items(target, data or {}, src.get("items"), src.get("defaultMode"))
            elif "downwardAPI" in vol:
                self._downward(target, vol["downwardAPI"].get("items", []), None)
            elif "projected" in vol:
                mode = vol["projected"].get("defaultMode")
                for source in vol["projected"].get("sources", []):
                    self._projected(target, source, mode)
            else:
                kinds = sorted(set(vol) - {"name"})
                raise Unsupported(
                    f"volume {name!r} of type {', '.join(kinds)} is not supported by the local node"
                )
            self.volumes[name] = target

    def _downward(self, target: Path, items: list[dict[str, Any]], mode: int | None) -> None:
        for item in items:
            if "fieldRef" not in item:
                raise Unsupported("downwardAPI items other than fieldRef are not supported")
            value = self._field(item["fieldRef"]["fieldPath"])
            self._write_file(target / item["path"], value.encode(), item.get("mode") or mode)

    def _projected(self, target: Path, source: dict[str, Any], mode: int | None) -> None:
        if "serviceAccountToken" in source:
            sat = source["serviceAccountToken"]
            token, refresh_at = self._request_token(sat)
            path = target / sat["path"]
            self._write_file(path, token, mode if mode is not None else 0o600)
            self.tokens.append((path, sat, refresh_at))
        elif "configMap" in source or "secret" in source:
            kind = "ConfigMap" if "configMap" in source else "Secret"
            src = source["configMap"] if kind == "ConfigMap" else source["secret"]
            data = self._get(kind, src["name"], bool(src.get("optional")))
            self._write_items(target, data or {}, src.get("items"), mode)
        elif "downwardAPI" in source:
            self._downward(target, source["downwardAPI"].get("items", []), mode)
        else:
            raise Unsupported(
                f"projected source {sorted(source)} is not supported by the local node"
            )

    # ---- status ----------------------------------------------------------------------------

    def _condition(self, kind: str, ok: bool, reason: str | None = None) -> dict[str, Any]:
        status = "True" if ok else "False"
        previous = self.transitions.get(kind)
        if previous is None or previous[0] != status:
            self.transitions[kind] = (status, now_rfc3339())
        cond = {"type": kind, "status": status, "lastTransitionTime": self.transitions[kind][1]}
        if reason and not ok:
            cond["reason"] = reason
        return cond

    def _container_status(self, c: Container) -> dict[str, Any]:
        status: dict[str, Any] = {
            "name": c.name,
            "image": c.spec.get("image", ""),
            "imageID": f"kitaru-localnode://{c.spec.get('image', '')}",
            "state": c.state,
            "lastState": c.last_state,
            "ready": "running" in c.state,
            "started": "running" in c.state,
            "restartCount": c.restart_count,
        }
        if c.proc is not None:
            status["containerID"] = f"kitaru-localnode://{c.proc.pid}"
        return status

    def _status(self) -> dict[str, Any]:
        init = [c for c in self.containers if c.init]
        main = [c for c in self.containers if not c.init]
        initialized = all(c.done and c.exit_code() == 0 for c in init)
        ready = all("running" in c.state for c in main) and self.phase == "Running"
        terminal = self.phase in ("Succeeded", "Failed")
        not_ready = "PodCompleted" if terminal else "ContainersNotReady"
        status: dict[str, Any] = {
            "phase": self.phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "conditions": [
                self._condition("PodScheduled", True),
                self._condition("Initialized", initialized, "ContainersNotInitialized"),
                self._condition("ContainersReady", ready, not_ready),
                self._condition("Ready", ready, not_ready),
            ],
            "containerStatuses": [self._container_status(c) for c in main],
        }
        if init:
            status["initContainerStatuses"] = [self._container_status(c) for c in init]
        if self.reason:
            status["reason"] = self.reason
        if self.message:
            status["message"] = self.message
        return status

    def _push(self) -> None:
        status = self._status()
        encoded = json.dumps(status, sort_keys=True)
        if encoded == self.last_pushed or self._gone:
            return
        try:
            self.agent.kube.request(
                "PATCH", f"{self._path()}/status", {"status": status}, content_type=STRATEGIC
            )
            self.last_pushed = encoded
        except ApiException as err:
            if err.status == 404:
                self._gone = True
            else:
                log.warning(
                    "pod %s: status update failed: %s %s", self.pod_name, err.status, err.body
                )
