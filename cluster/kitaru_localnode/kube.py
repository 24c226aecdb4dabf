"""Raw JSON requests to the API server (dicts in, dicts out; no generated models)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client import ApiException

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


class Kube:
    def __init__(self, kubeconfig: Path) -> None:
        cfg = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = 64  # one worker thread per pod shares this pool
        self.api = kubernetes.client.ApiClient(cfg)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """Raises kubernetes.client.ApiException on a non-2xx answer."""
        method, url, headers, payload, _ = self.api.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        resp = self.api.call_api(
            method, url, header_params=headers, body=payload, _request_timeout=30
        )
        data = resp.read() or b""
        if not 200 <= resp.status <= 299:
            raise ApiException.from_response(
                http_resp=resp, body=data.decode(errors="replace"), data=None
            )
        result: dict[str, Any] = json.loads(data)
        return result
