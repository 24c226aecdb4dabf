"""The local node agent: a minimal kubelet that runs the pods bound to it as local processes.

It authenticates with the node's client certificate (CN=system:node:kitaru-local,
O=system:nodes), so the Node authorizer and the NodeRestriction admission plugin limit it
to what a real kubelet may do: its own Node, Lease and pods, and the secrets, config maps
and service-account tokens of those pods. It needs nothing more.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import signal
import ssl
import sys
import threading
import time
import urllib.parse
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client import ApiException

from kitaru_localnode import procs
from kitaru_localnode.images import DEFAULT_IMAGES_FILE, ImageMap
from kitaru_localnode.kube import MERGE, STRATEGIC, Kube
from kitaru_localnode.pki import NODE_NAME
from kitaru_localnode.pod import PodWorker

log = logging.getLogger("kitaru-localnode")

LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 10


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meminfo_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 4 * 1024 * 1024


class Agent:
    def __init__(self, state_dir: Path, port: int, images: ImageMap) -> None:
        self.state_dir = state_dir
        self.port = port
        self.images = images
        self.pods_dir = state_dir / "pods"
        self.pod_pids = state_dir / "pids" / "pods"
        ports = json.loads((state_dir / "ports.json").read_text())
        self.apiserver_port = int(ports["apiserver"])
        self.kube = Kube(state_dir / "kubeconfigs" / "node.kubeconfig")
        self.core = kubernetes.client.CoreV1Api(self.kube.api)  # for its watch
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        self.node_uid = ""
        self._ready_since = now_rfc3339()

    # ---- node -------------------------------------------------------------------------

    def _node_status(self) -> dict[str, Any]:
        resources = {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{_meminfo_kib()}Ki",
            "pods": "110",
            "ephemeral-storage": f"{shutil.disk_usage(self.state_dir).total // 1024}Ki",
        }
        stamp = now_rfc3339()
        return {
            "capacity": resources,
            "allocatable": resources,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kitaru local node agent is posting ready status",
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": self._ready_since,
                }
            ],
            "nodeInfo": {
                "machineID": "kitaru-local",
                "systemUUID": "kitaru-local",
                "bootID": "kitaru-local",
                "kernelVersion": platform.release(),
                "osImage": "kitaru local node (processes on the host)",
                "containerRuntimeVersion": "kitaru-localnode://0.1",
                "kubeletVersion": "v1.34.4",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                    platform.machine(), platform.machine()
                ),
            },
        }

    def register_node(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "labels": {
                    "kubernetes.io/hostname": NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": self._node_status()["nodeInfo"]["architecture"],
                },
            },
            "status": self._node_status(),
        }
        try:
            self.kube.request("POST", "/api/v1/nodes", body)
        except ApiException as err:
            if err.status != 409:
                raise
        node = self._patch_node_status()
        self.node_uid = node["metadata"]["uid"]
        log.info("node %s registered (kubelet port %d)", NODE_NAME, self.port)

    def _patch_node_status(self) -> dict[str, Any]:
        return self.kube.request(
            "PATCH",
            f"/api/v1/nodes/{NODE_NAME}/status",
            {"status": self._node_status()},
            content_type=STRATEGIC,
        )

    def _renew_lease(self) -> None:
        renew = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        try:
            self.kube.request(
                "PATCH",
                f"{LEASES}/{NODE_NAME}",
                {"spec": {"renewTime": renew, "holderIdentity": NODE_NAME}},
                content_type=MERGE,
            )
        except ApiException as err:
            if err.status != 404:
                raise
            self.kube.request(
                "POST",
                LEASES,
                {
                    "metadata": {
                        "name": NODE_NAME,
                        "ownerReferences": [
                            {
                                "apiVersion": "v1",
                                "kind": "Node",
                                "name": NODE_NAME,
                                "uid": self.node_uid,
                            }
                        ],
                    },
                    "spec": {
                        "holderIdentity": NODE_NAME,
                        "leaseDurationSeconds": LEASE_SECONDS,
                        "renewTime": renew,
                    },
                },
            )

    def heartbeat_loop(self) -> None:
        while True:
            try:
                self._renew_lease()
                self._patch_node_status()
            except Exception:
                log.exception("heartbeat failed")
            time.sleep(HEARTBEAT_SECONDS)

    # ---- pods -------------------------------------------------------------------------

    def handle(self, event: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            worker = self.workers.get(uid)
            if event == "DELETED":
                if worker:
                    worker.gone()
                return
            if worker:
                worker.update(pod)
                return
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
        worker.start()

    def forget(self, uid: str) -> None:
        with self.lock:
            self.workers.pop(uid, None)

    def find(self, namespace: str, name: str) -> PodWorker | None:
        with self.lock:
            for worker in self.workers.values():
                meta = worker.pod["metadata"]
                if meta["namespace"] == namespace and meta["name"] == name:
                    return worker
        return None

    def _relist(self) -> str:
        data = self.kube.request(
            "GET", "/api/v1/pods", query={"fieldSelector": f"spec.nodeName={NODE_NAME}"}
        )
        seen = set()
        for pod in data["items"]:
            seen.add(pod["metadata"]["uid"])
            self.handle("MODIFIED", pod)
        with self.lock:
            vanished = [w for uid, w in self.workers.items() if uid not in seen]
        for worker in vanished:
            worker.gone()
        return str(data["metadata"]["resourceVersion"])

    def watch_pods(self) -> None:
        """List then watch; a watch that ends resumes, a too-old resourceVersion relists."""
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    rv = self._relist()
                stream = kubernetes.watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces,
                    field_selector=f"spec.nodeName={NODE_NAME}",
                    resource_version=rv,
                    allow_watch_bookmarks=True,
                    timeout_seconds=240,
                    _request_timeout=300,
                    deserialize=False,  # plain dicts, not models
                )
                for event in stream:
                    obj = event["object"]
                    rv = obj["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        self.handle(event["type"], obj)
            except ApiException as err:
                if err.status == 410:
                    log.info("watch expired; relisting")
                else:
                    log.warning("pod watch failed: %s; relisting", err)
                    time.sleep(1)
                rv = None
            except Exception:
                log.exception("pod watch failed; retrying")
                time.sleep(1)

    def cleanup_orphans(self) -> None:
        """Stop pod processes a previous agent left behind (their pods are re-run or failed)."""
        files = list(self.pod_pids.glob("*.pid")) if self.pod_pids.is_dir() else []
        procs.stop_groups(files, grace=2.0)
        for f in files:
            f.unlink(missing_ok=True)

    def serve_logs(self) -> None:
        handler = type("Handler", (LogHandler,), {"agent": self})
        server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        pki = self.state_dir / "pki"
        ctx.load_cert_chain(str(pki / "node-serving.crt"), str(pki / "node-serving.key"))
        # Only clients with a certificate of the cluster CA (the API server) get logs.
        ctx.load_verify_locations(str(pki / "ca.crt"))
        ctx.verify_mode = ssl.CERT_REQUIRED
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, name="logs", daemon=True).start()

    def run(self) -> None:
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.cleanup_orphans()
        self.serve_logs()
        self.register_node()
        self._renew_lease()
        threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True).start()
        self.watch_pods()


class LogHandler(BaseHTTPRequestHandler):
    """`GET /containerLogs/{ns}/{pod}/{container}`: what `kubectl logs` reaches through
    the API server. Supports follow, tailLines, limitBytes and previous."""

    agent: Agent

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("logs: " + format, *args)

    def _error(self, code: int, message: str) -> None:
        body = message.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
        if parts == ["healthz"]:
            return self._error(200, "ok")
        if len(parts) != 4 or parts[0] != "containerLogs":
            return self._error(404, "not found")
        query = dict(urllib.parse.parse_qsl(url.query))
        worker = self.agent.find(parts[1], parts[2])
        if worker is None:
            return self._error(404, f"pod {parts[1]}/{parts[2]} is not on this node")
        path = worker.log_path(parts[3], previous=query.get("previous") == "true")
        if path is None or not path.exists():
            return self._error(400, f'container "{parts[3]}" in pod "{parts[2]}" has no logs (yet)')
        with path.open("rb") as f:
            data = f.read()
            if "tailLines" in query:
                lines = data.splitlines(keepends=True)
                keep = int(query["tailLines"])
                data = b"".join(lines[-keep:]) if keep else b""
            limit = int(query["limitBytes"]) if "limitBytes" in query else None
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            sent = 0
            try:
                while True:
                    if limit is not None:
                        data = data[: max(0, limit - sent)]
                    if data:
                        self.wfile.write(data)
                        self.wfile.flush()
                        sent += len(data)
                    if query.get("follow") != "true" or (limit is not None and sent >= limit):
                        return
                    data = f.read()
                    if not data:
                        if not worker.is_running(parts[3]):
                            data = f.read()
                            if not data:
                                return
                        time.sleep(0.2)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                return


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kitaru-localnode", description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="cluster state directory")
    parser.add_argument("--port", type=int, required=True, help="HTTPS port (kubectl logs)")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES_FILE)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s"
    )
    # `cluster down` stops the pod process groups itself (from their pid files), so on
    # SIGTERM the agent only has to exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        Agent(args.dir.resolve(), args.port, ImageMap(args.images)).run()
    except OSError as err:
        log.error("node agent failed: %s", err)
        sys.exit(1)


if __name__ == "__main__":
    main()
