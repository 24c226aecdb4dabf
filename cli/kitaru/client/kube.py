"""The thin adapter over the Kubernetes Python client, scoped to one namespace.

Everything here is I/O; the rules live in `kitaru.core` and in the callers. The
kubernetes package is imported only when the first request is made, so importing
`kitaru` (and `kitaru --help`) stays fast. API errors become `KitaruError`s with the
API server's own message (CEL rules and admission denials are meant for humans).
"""

from __future__ import annotations

import builtins
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import cached_property
from typing import Any, TypeVar

from kitaru.client.connection import ENV_CA_FILE, Connection, Impersonation
from kitaru.client.errors import (
    AuthenticationError,
    Conflict,
    KitaruConnectionError,
    KitaruError,
    NotFound,
    PoliciesStarting,
    Rejected,
)
from kitaru.client.retry import attempts
from kitaru.core.backoff import Backoff
from kitaru.core.history import CLIENT_FIELD_MANAGER
from kitaru.core.names import API_VERSION, GROUP
from kitaru.kubeconfig import load_configuration

PAGE_SIZE = 500
PARTIAL_METADATA = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


class AlreadyExists(Conflict):
    """Create hit an existing name (HTTP 409 AlreadyExists)."""


class StaleObject(Conflict):
    """Replace or delete with an outdated resourceVersion (HTTP 409 Conflict)."""


class Expired(KitaruError):
    """A watch's resourceVersion is too old (HTTP 410): list again."""


def build_api_client(conn: Connection) -> Any:
    """A kubernetes ApiClient for a complete connection."""
    from kubernetes import client

    conn = conn.require()
    if conn.uses_kubeconfig_credentials and conn.kube is not None:
        api_client = client.ApiClient(load_configuration(conn.kube.path, conn.kube.context))
    else:
        configuration = client.Configuration()
        configuration.host = conn.server.value or ""
        configuration.api_key = {"authorization": conn.token.value or ""}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        ca = conn.ca_path()
        if ca:
            configuration.ssl_ca_cert = ca
        api_client = client.ApiClient(configuration)
    if conn.impersonate is not None:
        _impersonating(api_client, conn.impersonate)
    return _named(api_client)


def _impersonating(api_client: Any, who: Impersonation) -> None:
    """Every request of `api_client` carries `Impersonate-User` and one `Impersonate-Group`
    header per group. The generated client keeps headers in a dict (one value per name),
    so they are added below it, where urllib3 sends repeated headers."""
    from urllib3 import HTTPHeaderDict

    rest = api_client.rest_client
    send = rest.request

    def request(method: str, url: str, headers: Any = None, **kwargs: Any) -> Any:
        merged = HTTPHeaderDict(headers or {})
        for name in ("Impersonate-User", "Impersonate-Group"):
            merged.discard(name)
        merged["Impersonate-User"] = who.user
        for group in who.groups:
            merged.add("Impersonate-Group", group)
        return send(method, url, headers=merged, **kwargs)

    rest.request = request


def _named(api_client: Any) -> Any:
    """Our writes show as field manager `kitaru` in managedFields (the API server takes
    the User-Agent up to its first '/'), not the generic OpenAPI-Generator: the route
    history tells them from a kubectl or GitOps write by it."""
    api_client.user_agent = f"{CLIENT_FIELD_MANAGER}/{api_client.user_agent}"
    return api_client


_POLICY_DENIAL = re.compile(
    r"ValidatingAdmissionPolicy '[^']*' with binding '[^']*' denied request: "
)


def _raw_message(exc: Any) -> str:
    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(getattr(exc, "reason", exc))


def policy_message(message: str) -> str:
    """An admission policy's own words, without the API server's framing around them."""
    match = _POLICY_DENIAL.search(message)
    return message[match.end() :] if match else message


_POLICY_STARTING = re.compile(
    r"ValidatingAdmissionPolicy '([^']*)'.*failed to configure policy: (.*)$", re.DOTALL
)


def translate(exc: Any, what: str) -> KitaruError:
    """A KitaruError for a kubernetes ApiException about `what`."""
    status = getattr(exc, "status", None)
    raw = _raw_message(exc)
    starting = _POLICY_STARTING.search(raw) if status in (400, 403, 422) else None
    if starting:
        policy, reason = starting.groups()
        return PoliciesStarting(
            f"the API server's admission policies are still starting (policy {policy}: "
            f"{reason.strip()}; this lasts some seconds after the CRDs are installed): "
            "retry in a few seconds"
        )
    message = policy_message(raw)
    if status == 404:
        return NotFound(f"{what} not found")
    if status == 409:
        try:
            reason = json.loads(exc.body).get("reason")
        except (TypeError, ValueError, AttributeError):
            reason = None
        if reason == "AlreadyExists":
            return AlreadyExists(f"{what} already exists")
        return StaleObject(f"{what} changed concurrently: {message}")
    if status == 410:
        return Expired(f"{what}: {message}")
    if status == 401:
        return AuthenticationError(
            "the API server rejected the credentials: check KITARU_AUTH_TOKEN, "
            "`kitaru login` or the kubeconfig user"
        )
    if status in (400, 403, 422):
        return Rejected(message)
    return KitaruError(f"API server error ({status}) on {what}: {message}")


def network_reason(exc: Exception) -> str:
    """The useful end of a urllib3 error ("[Errno 111] Connection refused")."""
    text = str(getattr(exc, "reason", None) or exc)
    start = text.find("[Errno")
    return text[start:].rstrip("\"')") if start >= 0 else text


# Right after the CRDs are installed the admission policies refuse every write they match
# for some seconds (measured here: up to 27 s after the CRDs were replaced): wait that out.
POLICIES_STARTING = Backoff(base=0.25, cap=2.0, attempts=18)
T = TypeVar("T")


def _while_policies_start(call: Callable[[], T]) -> T:
    """`call()`, tried again while the admission policies are still starting; then the
    error that says to retry in a few seconds."""
    error: PoliciesStarting | None = None
    for _ in attempts(POLICIES_STARTING):
        try:
            return call()
        except PoliciesStarting as exc:
            error = exc
    assert error is not None
    raise error


class Kube:
    """Namespaced reads and writes of Kitaru resources, ConfigMaps, pods and tokens."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection.require()
        self.namespace = self.connection.project.value or ""
        self._username: str | None = None

    @cached_property
    def api_client(self) -> Any:
        return build_api_client(self.connection)

    @cached_property
    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api_client)

    @cached_property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client)

    @contextmanager
    def creating(self, what: str) -> Iterator[None]:
        """Like `calling`; a 404 on create means the namespace itself is missing."""
        try:
            with self.calling(what):
                yield
        except NotFound as exc:
            raise NotFound(
                f"project {self.namespace!r} not found: create the namespace or set "
                "KITARU_PROJECT to an existing one",
                kind="ProjectNotFound",
            ) from exc

    @contextmanager
    def calling(self, what: str) -> Iterator[None]:
        """Translate client exceptions for one request about `what`."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            yield
        except ApiException as exc:
            raise translate(exc, what) from exc
        except HTTPError as exc:
            reason = network_reason(exc)
            if "CERTIFICATE_VERIFY_FAILED" in reason:  # a private CA: name where it goes
                reason += f"; set {ENV_CA_FILE} to the API server's CA certificate (PEM)"
            raise KitaruConnectionError(
                f"cannot reach the API server {self.connection.server.value}: {reason}"
            ) from exc

    # --- Kitaru custom resources ----------------------------------------------------

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            with self.calling(f"{plural} {name}"):
                obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                    GROUP, API_VERSION, self.namespace, plural, name
                )
                return obj
        except NotFound:
            return None

    def items(
        self,
        plural: str,
        *,
        field_selector: str = "",
        label_selector: str = "",
        metadata_only: bool = False,
        page_size: int = PAGE_SIZE,
    ) -> Iterator[dict[str, Any]]:
        """Every object matching the selectors, fetched page by page (`limit` and
        `continue`), so memory holds one page. `metadata_only` asks the API server for
        PartialObjectMetadata: names, labels and annotations without spec or status."""
        headers = {"Accept": PARTIAL_METADATA} if metadata_only else None
        token: str | None = None
        while True:
            with self.calling(plural):
                response = self.custom.list_namespaced_custom_object(
                    GROUP,
                    API_VERSION,
                    self.namespace,
                    plural,
                    field_selector=field_selector or None,
                    label_selector=label_selector or None,
                    limit=page_size,
                    _continue=token,
                    _headers=headers,
                    _preload_content=False,
                )
            page = json.loads(response.data)
            yield from page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    def list(self, plural: str, *, field_selector: str = "") -> builtins.list[dict[str, Any]]:
        return builtins.list(self.items(plural, field_selector=field_selector))

    def exists(self, plural: str, *, field_selector: str) -> bool:
        """Whether any object matches, reading as little as the server allows."""
        found = self.items(plural, field_selector=field_selector, metadata_only=True, page_size=50)
        return next(found, None) is not None

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"].get("name") or body["metadata"].get("generateName", "")

        def call() -> dict[str, Any]:
            with self.creating(f"{plural} {name}"):
                obj: dict[str, Any] = self.custom.create_namespaced_custom_object(
                    GROUP, API_VERSION, self.namespace, plural, body
                )
                return obj

        return _while_policies_start(call)

    def replace(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        """Replace guarded by body.metadata.resourceVersion (compare-and-swap)."""
        name = body["metadata"]["name"]

        def call() -> dict[str, Any]:
            with self.calling(f"{plural} {name}"):
                obj: dict[str, Any] = self.custom.replace_namespaced_custom_object(
                    GROUP, API_VERSION, self.namespace, plural, name, body
                )
                return obj

        return _while_policies_start(call)

    def patch(self, plural: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (only for scalar fields: annotations, cancelRequested)."""

        def call() -> dict[str, Any]:
            with self.calling(f"{plural} {name}"):
                obj: dict[str, Any] = self.custom.patch_namespaced_custom_object(
                    GROUP,
                    API_VERSION,
                    self.namespace,
                    plural,
                    name,
                    patch,
                    _content_type="application/merge-patch+json",
                )
                return obj

        return _while_policies_start(call)

    def delete(
        self,
        plural: str,
        name: str,
        resource_version: str | None = None,
        *,
        uid: str | None = None,
    ) -> None:
        """Delete; with `resource_version` or `uid`, only that version or that object
        (a precondition: 409 if it changed or was replaced meanwhile)."""
        from kubernetes import client

        options = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version=resource_version, uid=uid)
            if resource_version or uid
            else None
        )

        def call() -> None:
            with self.calling(f"{plural} {name}"):
                self.custom.delete_namespaced_custom_object(
                    GROUP, API_VERSION, self.namespace, plural, name, body=options
                )

        _while_policies_start(call)

    def watch(self, plural: str, name: str, resource_version: str, timeout: int) -> Iterator[Any]:
        """Events of one object from resource_version on, for at most `timeout` seconds."""
        from kubernetes import watch

        with self.calling(f"{plural} {name}"):
            stream = watch.Watch().stream(
                self.custom.list_namespaced_custom_object,
                GROUP,
                API_VERSION,
                self.namespace,
                plural,
                field_selector=f"metadata.name={name}",
                resource_version=resource_version,
                timeout_seconds=max(1, timeout),
            )
            yield from stream

    # --- core resources -------------------------------------------------------------

    def create_config_map(self, body: dict[str, Any]) -> None:
        with self.creating(f"configmap {body['metadata']['name']}"):
            self.core.create_namespaced_config_map(self.namespace, body)

    def pods(self, label_selector: str) -> builtins.list[Any]:
        with self.calling("pods"):
            return list(
                self.core.list_namespaced_pod(self.namespace, label_selector=label_selector).items
            )

    def pod_log(self, pod: str, container: str | None = None) -> str:
        with self.calling(f"logs of pod {pod}"):
            log: str = self.core.read_namespaced_pod_log(pod, self.namespace, container=container)
            return log

    def apply_rbac(self, objects: builtins.list[dict[str, Any]]) -> None:
        """Create ServiceAccounts, Roles and RoleBindings; existing ones are kept."""
        from kubernetes import client

        rbac = client.RbacAuthorizationV1Api(self.api_client)
        create = {
            "ServiceAccount": self.core.create_namespaced_service_account,
            "Role": rbac.create_namespaced_role,
            "RoleBinding": rbac.create_namespaced_role_binding,
        }
        for obj in objects:
            with suppress(AlreadyExists), self.creating(f"{obj['kind']} {obj['metadata']['name']}"):
                create[obj["kind"]](self.namespace, obj)

    def request_token(self, service_account: str, seconds: int) -> str:
        from kubernetes import client

        body = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
        )
        with self.calling(f"serviceaccount {service_account}"):
            response = self.core.create_namespaced_service_account_token(
                service_account, self.namespace, body
            )
        token: str = response.status.token
        return token

    def rules_review(self) -> builtins.list[dict[str, Any]]:
        """What this connection may do in the project, as the API server lists it
        (SelfSubjectRulesReview: every identity may ask): the resource rules, wire form."""
        from kubernetes import client

        review = client.V1SelfSubjectRulesReview(
            spec=client.V1SelfSubjectRulesReviewSpec(namespace=self.namespace)
        )
        with self.calling("self subject rules review"):
            answer = client.AuthorizationV1Api(self.api_client).create_self_subject_rules_review(
                review
            )
        rules = answer.status.resource_rules if answer.status else None
        return [self.api_client.sanitize_for_serialization(rule) for rule in rules or []]

    def username(self) -> str:
        """Who the API server says this connection is (SelfSubjectReview); cached."""
        if self._username is None:
            from kubernetes import client

            with self.calling("self subject review"):
                review = client.AuthenticationV1Api(self.api_client).create_self_subject_review(
                    client.V1SelfSubjectReview()
                )
            user = review.status.user_info if review.status else None
            self._username = str(user.username or "") if user else ""
        return self._username

    def allowed(self, verb: str, plural: str, group: str = GROUP) -> bool:
        """Whether the API server lets this connection `verb` `plural` in the project
        (SelfSubjectAccessReview): the dashboard shows only what the user may do."""
        from kubernetes import client

        attributes = client.V1ResourceAttributes(
            namespace=self.namespace, verb=verb, group=group, resource=plural
        )
        review = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)
        )
        with self.calling("self subject access review"):
            answer = client.AuthorizationV1Api(self.api_client).create_self_subject_access_review(
                review
            )
        return bool(answer.status and answer.status.allowed)

    def server_version(self) -> str:
        from kubernetes import client

        with self.calling("server version"):
            info = client.VersionApi(self.api_client).get_code()
        return str(info.git_version)
