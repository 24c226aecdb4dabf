"""The operator's one way to call the API server: `AsyncKube`, raw JSON over a pooled
aiohttp session on kopf's event loop.

Raw requests because the operator works with dicts and pydantic models: skipping the
client library's model (de)serialisation keeps a dispatch cheap. Outcomes that mean
"already done" (409 on create, 404 on delete) are return values, not exceptions; any
other non-2xx is an `ApiError`. Credentials and TLS settings come from the `kubernetes`
package's loaders (in-cluster service account with token refresh, or the kubeconfig by
kubectl's rules through `kitaru.kubeconfig`, exec plugins included), read per request.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from kitaru import kubeconfig
from kitaru.core.history import HISTORIES
from kitaru.core.names import API_VERSION, DEPLOYMENTS, GROUP, INVOCATIONS, ROUTES, SCHEDULES
from kitaru.core.promotion import PROMOTIONS
from kubernetes import client, config

Body = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the API: `/apis/batch/v1` + `jobs`, ..."""

    prefix: str
    plural: str
    kind: str
    api_version: str

    def collection(self, namespace: str | None) -> str:
        """Collection path in one namespace, or across all of them (None)."""
        if namespace is None:
            return f"{self.prefix}/{self.plural}"
        return f"{self.prefix}/namespaces/{namespace}/{self.plural}"

    def item(self, namespace: str, name: str) -> str:
        return f"{self.collection(namespace)}/{name}"


_KITARU = f"/apis/{GROUP}/{API_VERSION}"
DEPLOYMENT = Kind(_KITARU, DEPLOYMENTS, "FlowDeployment", f"{GROUP}/{API_VERSION}")
ROUTE = Kind(_KITARU, ROUTES, "FlowRoute", f"{GROUP}/{API_VERSION}")
INVOCATION = Kind(_KITARU, INVOCATIONS, "FlowInvocation", f"{GROUP}/{API_VERSION}")
HISTORY = Kind(_KITARU, HISTORIES, "FlowHistory", f"{GROUP}/{API_VERSION}")
SCHEDULE = Kind(_KITARU, SCHEDULES, "FlowSchedule", f"{GROUP}/{API_VERSION}")
PROMOTION = Kind(_KITARU, PROMOTIONS, "FlowPromotion", f"{GROUP}/{API_VERSION}")
JOB = Kind("/apis/batch/v1", "jobs", "Job", "batch/v1")
POD = Kind("/api/v1", "pods", "Pod", "v1")
EVENT = Kind("/api/v1", "events", "Event", "v1")
LEASE = Kind("/apis/coordination.k8s.io/v1", "leases", "Lease", "coordination.k8s.io/v1")


def load_configuration() -> client.Configuration:
    """In-cluster service account, else the kubeconfig as kubectl reads it
    (`kitaru.kubeconfig`: the `$KUBECONFIG` list merged, read now, not at import time;
    tests and the demo set it later)."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        return kubeconfig.load_configuration(kubeconfig.kubeconfig_paths(os.environ))
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


class ClientClosed(Exception):
    """A call after `AsyncKube.close()`: the process is stopping."""


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


def _selectors(label_selector: str, field_selector: str) -> dict[str, str]:
    params = {}
    if label_selector:
        params["labelSelector"] = label_selector
    if field_selector:
        params["fieldSelector"] = field_selector
    return params


class AsyncKube:
    """Every API call of the operator over one pooled aiohttp session.

    Create it inside the running event loop (kopf startup) and `close()` it at cleanup.
    """

    def __init__(self, configuration: client.Configuration, limit: int = 64, timeout: float = 30):
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
    def from_environment(cls, limit: int = 64) -> AsyncKube:
        return cls(load_configuration(), limit=limit)

    async def close(self) -> None:
        await self.session.close()

    def _url(self, method: str, path: str) -> str:
        """The request's URL; `ClientClosed` once closed (aiohttp's own error for that is a
        bare RuntimeError)."""
        if self.session.closed:
            raise ClientClosed(f"{method} {path}: the API client is closed")
        return self.host + path

    async def call(
        self,
        method: str,
        path: str,
        ok: tuple[int, ...] = (),
        body: Body | None = None,
        *,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> tuple[int, Body | None]:
        """(status, parsed body); `ok` lists the non-2xx statuses that are outcomes
        (their body is None); any other non-2xx raises `ApiError`."""
        headers = {"Content-Type": content_type, **authorization_header(self.configuration)}
        data = None if body is None else json.dumps(body)
        async with self.session.request(
            method, self._url(method, path), data=data, params=params or None, headers=headers
        ) as response:
            raw = await response.read()
            if response.status < 300:
                return response.status, json.loads(raw)
            if response.status in ok:
                return response.status, None
            raise ApiError(response.status, method, path, raw.decode(errors="replace"))

    # --- single objects ----------------------------------------------------------------

    async def get(self, kind: Kind, namespace: str, name: str) -> Body | None:
        _, obj = await self.call("GET", kind.item(namespace, name), (404,))
        return obj

    async def create(self, kind: Kind, namespace: str, body: Body) -> Body | None:
        """The created object, or None if one of that name exists (409)."""
        _, created = await self.call("POST", kind.collection(namespace), (409,), body)
        return created

    async def replace(self, kind: Kind, body: Body, subresource: str = "") -> Body | None:
        """PUT with the body's resourceVersion (compare-and-swap): the object as written,
        or None on conflict or absence."""
        meta = body["metadata"]
        path = kind.item(meta["namespace"], meta["name"]) + (
            f"/{subresource}" if subresource else ""
        )
        _, written = await self.call("PUT", path, (404, 409), body)
        return written

    async def patch(
        self, kind: Kind, namespace: str, name: str, patch: Body, subresource: str = ""
    ) -> Body | None:
        """JSON merge patch; None if the object is gone, or (with a resourceVersion in the
        patch's metadata) changed meanwhile (409)."""
        path = kind.item(namespace, name) + (f"/{subresource}" if subresource else "")
        _, patched = await self.call(
            "PATCH", path, (404, 409), patch, content_type="application/merge-patch+json"
        )
        return patched

    async def delete(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        *,
        resource_version: str | None = None,
        uid: str | None = None,
        propagation: str = "Background",
    ) -> bool:
        """Delete, with preconditions when given; True unless a precondition failed (409).
        An absent object counts as deleted."""
        options: Body = {"propagationPolicy": propagation}
        preconditions = {
            key: value
            for key, value in (("resourceVersion", resource_version), ("uid", uid))
            if value
        }
        if preconditions:
            options["preconditions"] = preconditions
        status, _ = await self.call("DELETE", kind.item(namespace, name), (404, 409), options)
        return status != 409

    # --- collections ------------------------------------------------------------------

    async def list_raw(
        self,
        kind: Kind,
        namespace: str | None,
        *,
        limit: int,
        continue_token: str = "",
        label_selector: str = "",
        field_selector: str = "",
    ) -> bytes:
        """One page of a list, undecoded (the caller decodes only what it needs)."""
        params = {"limit": str(limit), **_selectors(label_selector, field_selector)}
        if continue_token:
            params["continue"] = continue_token
        path = kind.collection(namespace)
        headers = authorization_header(self.configuration)
        url = self._url("GET", path)
        async with self.session.get(url, params=params, headers=headers) as response:
            raw = await response.read()
            if response.status >= 300:
                raise ApiError(response.status, "GET", path, raw.decode(errors="replace"))
            return raw

    async def any_item(self, kind: Kind, namespace: str, *, field_selector: str) -> bool:
        """Whether any object matches (reads at most one page of one)."""
        token = ""
        while True:
            page = json.loads(
                await self.list_raw(
                    kind, namespace, limit=1, continue_token=token, field_selector=field_selector
                )
            )
            if page.get("items"):
                return True
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return False

    async def list_all(
        self,
        kind: Kind,
        namespace: str | None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 500,
    ) -> list[Body]:
        """Every object of a (small, selected) set, page by page."""
        items: list[Body] = []
        token = ""
        while True:
            page = json.loads(
                await self.list_raw(
                    kind,
                    namespace,
                    limit=limit,
                    continue_token=token,
                    label_selector=label_selector,
                    field_selector=field_selector,
                )
            )
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return items

    async def watch(
        self,
        kind: Kind,
        namespace: str | None,
        resource_version: str,
        *,
        label_selector: str = "",
        field_selector: str = "",
        timeout_seconds: int = 270,
    ) -> AsyncIterator[bytes]:
        """The events of one watch request, with bookmarks, as undecoded JSON lines, until
        the server ends it. Raises `WatchExpired` when the resourceVersion is too old."""
        params = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout_seconds),
            **_selectors(label_selector, field_selector),
        }
        # No total timeout for a stream; a silent connection is dropped after a while.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout_seconds + 30)
        path = kind.collection(namespace)
        async with self.session.get(
            self._url("WATCH", path),
            params=params,
            headers=authorization_header(self.configuration),
            timeout=timeout,
        ) as response:
            if response.status == 410:
                raise WatchExpired(kind.plural)
            if response.status >= 300:
                raw = await response.read()
                raise ApiError(response.status, "WATCH", path, raw.decode(errors="replace"))
            buffer = bytearray()
            async for chunk in response.content.iter_any():
                buffer.extend(chunk)
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if line.strip():
                        yield line
