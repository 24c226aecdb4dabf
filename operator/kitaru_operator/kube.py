"""The few API calls the operator makes: `Kube` with the sync `kubernetes` client (flows,
routes: thread-pool handlers) and `AsyncKube` over aiohttp (the invocation hot path).

Both send raw JSON requests: the operator works with dicts and pydantic models, and
skipping the client's model (de)serialisation keeps a dispatch cheap. The paths and the
status-to-outcome rule are shared: outcomes that mean "already done" (409 on create,
404 on delete) are return values, not exceptions; any other non-2xx is an `ApiError`.
"""

from __future__ import annotations

import json
import os
import ssl
from typing import Any

import aiohttp
from kitaru.core.names import API_VERSION, GROUP
from kubernetes import client, config

Body = dict[str, Any]


def _load_configuration(pool_size: int) -> client.Configuration:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        # The client reads $KUBECONFIG at import time; read it now (tests set it late).
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = pool_size
    return configuration


def authorization_header(configuration: client.Configuration) -> dict[str, str]:
    """The bearer header of a client configuration, read per request so the in-cluster
    token refresh hook runs. The in-cluster loader stores the token as `BearerToken`,
    kubeconfig loaders as `authorization`; client certificates need no header."""
    token = configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
    return {"Authorization": token} if token else {}


class ApiError(Exception):
    """An unexpected API status (not one of the "already done" outcomes)."""

    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path}: {status} {body[:500]}")
        self.status = status


# --- what both clients share: paths, and what a response status means ----------------


def jobs_path(namespace: str) -> str:
    return f"/apis/batch/v1/namespaces/{namespace}/jobs"


def pods_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods"


def custom_path(plural: str, namespace: str) -> str:
    return f"/apis/{GROUP}/{API_VERSION}/namespaces/{namespace}/{plural}"


def object_path(plural: str, body: Body) -> str:
    """The path of the kitaru object `body` names (namespace and name from its metadata)."""
    meta = body["metadata"]
    return f"{custom_path(plural, meta['namespace'])}/{meta['name']}"


def outcome(
    status: int, data: bytes, ok: tuple[int, ...], method: str, path: str
) -> tuple[int, Body | None]:
    """(status, parsed body) of a response; `ok` lists the non-2xx statuses that are
    outcomes (body None); any other status raises `ApiError`."""
    if status < 300:
        return status, json.loads(data)
    if status in ok:
        return status, None
    raise ApiError(status, method, path, data.decode(errors="replace"))


class Kube:
    """Thin, thread-safe wrappers over the API calls the flow reconciles need."""

    def __init__(self, pool_size: int = 32, timeout: float = 30.0) -> None:
        self.api = client.ApiClient(_load_configuration(pool_size))
        self.timeout = timeout

    def _call(
        self, method: str, path: str, ok: tuple[int, ...], body: Body | None = None
    ) -> tuple[int, Body | None]:
        """(status, parsed body); `ok` lists the non-2xx statuses that are outcomes."""
        verb, url, headers, payload, _ = self.api.param_serialize(
            method,
            path,
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(
            verb, url, header_params=headers, body=payload, _request_timeout=self.timeout
        )
        return outcome(response.status, response.read() or b"", ok, method, path)

    def replace_status(self, plural: str, body: Body) -> bool:
        """PUT the status subresource with the body's resourceVersion; False on conflict."""
        status, _ = self._call("PUT", f"{object_path(plural, body)}/status", (404, 409), body)
        return status < 300

    def get(self, plural: str, namespace: str, name: str) -> Body | None:
        _, obj = self._call("GET", f"{custom_path(plural, namespace)}/{name}", (404,))
        return obj

    def create(self, plural: str, namespace: str, body: Body) -> bool:
        """True if created, False if it already existed (409)."""
        status, _ = self._call("POST", custom_path(plural, namespace), (409,), body)
        return status < 300

    def replace(self, plural: str, body: Body) -> bool:
        """Compare-and-swap by the body's resourceVersion; False on conflict or absence."""
        status, _ = self._call("PUT", object_path(plural, body), (404, 409), body)
        return status < 300

    def delete(
        self, plural: str, namespace: str, name: str, resource_version: str | None = None
    ) -> bool:
        """Delete (with a resourceVersion precondition if given); False on conflict."""
        options: Body = {}
        if resource_version:
            options["preconditions"] = {"resourceVersion": resource_version}
        path = f"{custom_path(plural, namespace)}/{name}"
        status, _ = self._call("DELETE", path, (404, 409), options)
        return status != 409


class AsyncKube:
    """The invocation hot path's API calls over one pooled aiohttp session.

    No thread hop, keep-alive connections reused across reconciles. Same credentials,
    paths and "already done" semantics as `Kube`. Create it inside the running event
    loop (kopf startup) and `close()` it at cleanup.
    """

    def __init__(self, configuration: client.Configuration, limit: int = 32, timeout: float = 30.0):
        self.configuration = configuration
        self.host = configuration.host.rstrip("/")
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if configuration.cert_file:
            context.load_cert_chain(configuration.cert_file, configuration.key_file)
        if not configuration.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=limit, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(total=timeout),
            json_serialize=json.dumps,
        )

    @classmethod
    def from_environment(cls, limit: int = 32) -> AsyncKube:
        return cls(_load_configuration(limit), limit=limit)

    async def close(self) -> None:
        await self.session.close()

    def _headers(self) -> dict[str, str]:
        return authorization_header(self.configuration)

    async def _call(
        self, method: str, path: str, ok: tuple[int, ...], body: Body | None = None, **params: str
    ) -> tuple[int, Body | None]:
        """(status, parsed body); `ok` lists the non-2xx statuses that are outcomes."""
        async with self.session.request(
            method, self.host + path, json=body, params=params or None, headers=self._headers()
        ) as response:
            return outcome(response.status, await response.read(), ok, method, path)

    async def create_job(self, namespace: str, body: Body) -> Body | None:
        """The created Job, or None if one of that name exists (409)."""
        _, created = await self._call("POST", jobs_path(namespace), (409,), body)
        return created

    async def get_job(self, namespace: str, name: str) -> Body | None:
        _, job = await self._call("GET", f"{jobs_path(namespace)}/{name}", (404,))
        return job

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and (in the background) its pods; absent is fine."""
        options = {"propagationPolicy": "Background"}
        await self._call("DELETE", f"{jobs_path(namespace)}/{name}", (404,), options)

    async def list_pods(self, namespace: str, label_selector: str) -> list[Body]:
        _, listed = await self._call("GET", pods_path(namespace), (), labelSelector=label_selector)
        return list((listed or {}).get("items") or [])

    async def replace_status(self, plural: str, body: Body) -> Body | None:
        """PUT the status subresource with the body's resourceVersion: the object as
        written, or None on conflict or absence."""
        path = f"{object_path(plural, body)}/status"
        _, written = await self._call("PUT", path, (404, 409), body)
        return written

    async def delete(self, plural: str, namespace: str, name: str) -> bool:
        """Delete; absent counts as deleted."""
        await self._call("DELETE", f"{custom_path(plural, namespace)}/{name}", (404,))
        return True
