"""The few API calls the operator makes: `Kube` with the sync `kubernetes` client (flows,
routes: thread-pool handlers) and `AsyncKube` over aiohttp (the invocation hot path).

Responses are read as raw JSON (`_preload_content=False`): the operator works
with dicts and pydantic models, and skipping the client's model deserialisation
keeps a dispatch cheap. Outcomes that mean "already done" (409 on create, 404 on
delete) are return values, not exceptions.
"""

from __future__ import annotations

import json
import os
import ssl
from typing import Any, cast

import aiohttp
from kitaru.core.names import API_VERSION, GROUP
from kubernetes import client, config
from kubernetes.client.rest import ApiException

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


class Kube:
    """Thin, thread-safe wrappers over the API calls the reconcilers need."""

    def __init__(self, pool_size: int = 32, timeout: float = 30.0) -> None:
        self.api = client.ApiClient(_load_configuration(pool_size))
        self.custom = client.CustomObjectsApi(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.core = client.CoreV1Api(self.api)
        self.timeout = timeout

    def _json(self, response: Any) -> Body:
        return json.loads(response.data)

    # --- Jobs and pods ---------------------------------------------------------

    def create_job(self, namespace: str, body: Body) -> Body | None:
        """The created Job, or None if one of that name exists (409)."""
        try:
            return self._json(
                self.batch.create_namespaced_job(
                    namespace,
                    cast(client.V1Job, body),
                    _preload_content=False,
                    _request_timeout=self.timeout,
                )
            )
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    def get_job(self, namespace: str, name: str) -> Body | None:
        try:
            return self._json(
                self.batch.read_namespaced_job(
                    name, namespace, _preload_content=False, _request_timeout=self.timeout
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and (in the background) its pods; absent is fine."""
        try:
            self.batch.delete_namespaced_job(
                name,
                namespace,
                propagation_policy="Background",
                _preload_content=False,
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def list_pods(self, namespace: str, label_selector: str) -> list[Body]:
        response = self.core.list_namespaced_pod(
            namespace,
            label_selector=label_selector,
            _preload_content=False,
            _request_timeout=self.timeout,
        )
        return list(self._json(response).get("items") or [])

    # --- kitaru custom resources ----------------------------------------------

    def replace_status(self, plural: str, body: Body) -> bool:
        """PUT the status subresource with the body's resourceVersion; False on conflict."""
        meta = body["metadata"]
        try:
            self.custom.replace_namespaced_custom_object_status(
                GROUP,
                API_VERSION,
                meta["namespace"],
                plural,
                meta["name"],
                body,
                _preload_content=False,
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    def get(self, plural: str, namespace: str, name: str) -> Body | None:
        try:
            return self._json(
                self.custom.get_namespaced_custom_object(
                    GROUP,
                    API_VERSION,
                    namespace,
                    plural,
                    name,
                    _preload_content=False,
                    _request_timeout=self.timeout,
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, plural: str, namespace: str, body: Body) -> bool:
        """True if created, False if it already existed (409)."""
        try:
            self.custom.create_namespaced_custom_object(
                GROUP,
                API_VERSION,
                namespace,
                plural,
                body,
                _preload_content=False,
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def replace(self, plural: str, body: Body) -> bool:
        """Compare-and-swap by the body's resourceVersion; False on conflict or absence."""
        meta = body["metadata"]
        try:
            self.custom.replace_namespaced_custom_object(
                GROUP,
                API_VERSION,
                meta["namespace"],
                plural,
                meta["name"],
                body,
                _preload_content=False,
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    def delete(
        self, plural: str, namespace: str, name: str, resource_version: str | None = None
    ) -> bool:
        """Delete (with a resourceVersion precondition if given); False on conflict."""
        options: Body = {}
        if resource_version:
            options["preconditions"] = {"resourceVersion": resource_version}
        try:
            self.custom.delete_namespaced_custom_object(
                GROUP,
                API_VERSION,
                namespace,
                plural,
                name,
                body=cast(client.V1DeleteOptions, options),
                _preload_content=False,
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            if exc.status == 404:
                return True
            if exc.status == 409:
                return False
            raise
        return True


class ApiError(Exception):
    """An unexpected API status (not one of the "already done" outcomes)."""

    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path}: {status} {body[:500]}")
        self.status = status


class AsyncKube:
    """The invocation hot path's API calls over one pooled aiohttp session.

    No thread hop, no model (de)serialisation, keep-alive connections reused across
    reconciles. Same credentials and the same "already done" semantics as `Kube`.
    Create it inside the running event loop (kopf startup) and `close()` it at cleanup.
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
        # Called per request: in-cluster tokens are refreshed by the configuration's hook.
        token = self.configuration.get_api_key_with_prefix("authorization")
        return {"Authorization": token} if token else {}

    async def _call(
        self, method: str, path: str, ok: tuple[int, ...], body: Body | None = None, **params: str
    ) -> tuple[int, Body | None]:
        """(status, parsed body); `ok` lists the non-2xx statuses that are outcomes."""
        async with self.session.request(
            method, self.host + path, json=body, params=params or None, headers=self._headers()
        ) as response:
            if response.status < 300:
                return response.status, json.loads(await response.read())
            text = await response.text()
            if response.status in ok:
                return response.status, None
            raise ApiError(response.status, method, path, text)

    @staticmethod
    def _jobs(namespace: str) -> str:
        return f"/apis/batch/v1/namespaces/{namespace}/jobs"

    @staticmethod
    def _custom(plural: str, namespace: str) -> str:
        return f"/apis/{GROUP}/{API_VERSION}/namespaces/{namespace}/{plural}"

    async def create_job(self, namespace: str, body: Body) -> Body | None:
        """The created Job, or None if one of that name exists (409)."""
        _, created = await self._call("POST", self._jobs(namespace), (409,), body)
        return created

    async def get_job(self, namespace: str, name: str) -> Body | None:
        _, job = await self._call("GET", f"{self._jobs(namespace)}/{name}", (404,))
        return job

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and (in the background) its pods; absent is fine."""
        options = {"propagationPolicy": "Background"}
        await self._call("DELETE", f"{self._jobs(namespace)}/{name}", (404,), options)

    async def list_pods(self, namespace: str, label_selector: str) -> list[Body]:
        path = f"/api/v1/namespaces/{namespace}/pods"
        _, listed = await self._call("GET", path, (), labelSelector=label_selector)
        return list((listed or {}).get("items") or [])

    async def replace_status(self, plural: str, body: Body) -> Body | None:
        """PUT the status subresource with the body's resourceVersion: the object as
        written, or None on conflict or absence."""
        meta = body["metadata"]
        path = f"{self._custom(plural, meta['namespace'])}/{meta['name']}/status"
        _, written = await self._call("PUT", path, (404, 409), body)
        return written

    async def delete(self, plural: str, namespace: str, name: str) -> bool:
        """Delete; absent counts as deleted."""
        await self._call("DELETE", f"{self._custom(plural, namespace)}/{name}", (404,))
        return True
