"""`KitaruClient`: the one entry point to the API server for the CLI, SDK and MCP server."""

from __future__ import annotations

from functools import cached_property

from kitaru.client.connection import Connection, resolve_connection
from kitaru.client.deployments import Deployments
from kitaru.client.errors import InvalidArguments, KitaruConnectionError, NotFound, Rejected
from kitaru.client.executions import Executions
from kitaru.client.kube import Kube
from kitaru.client.schedules import Schedules
from kitaru.core.tokens import (
    CLIENT_SERVICE_ACCOUNT,
    CLIENT_TOKEN_MAX_SECONDS,
    CLIENT_TOKEN_MIN_SECONDS,
    client_identity_hint,
    extra_grants,
    same_server,
    too_broad_message,
)

DEFAULT_SERVICE_ACCOUNT = CLIENT_SERVICE_ACCOUNT
TOKEN_RBAC = "create on serviceaccounts/token (core API group)"


class KitaruClient:
    """Deployments, executions and schedules in the active project.

    `KitaruClient()` uses the active connection (environment, `kitaru login`,
    kubeconfig; see `kitaru.client.connection`); nothing is contacted until the
    first request, and a missing setting is reported then.
    """

    def __init__(self, connection: Connection | None = None) -> None:
        self.connection = connection if connection is not None else resolve_connection()

    @cached_property
    def kube(self) -> Kube:
        return Kube(self.connection)

    @property
    def project(self) -> str:
        return self.kube.namespace

    @cached_property
    def deployments(self) -> Deployments:
        return Deployments(self)

    @cached_property
    def executions(self) -> Executions:
        return Executions(self)

    @cached_property
    def schedules(self) -> Schedules:
        return Schedules(self)

    def service_account(self) -> str:
        """The ServiceAccount `auth_token()` mints for (see `kitaru auth token`)."""
        configured = self.connection.service_account.value
        if configured:
            return configured
        if self.connection.token.is_set:
            raise KitaruConnectionError(
                "this connection authenticates with a bearer token "
                f"({self.connection.token.source}), which kitaru never prints; to mint a "
                "short-lived token, name a ServiceAccount: set KITARU_SERVICE_ACCOUNT or run "
                "`kitaru login URL --api-key TOKEN --project NS --service-account NAME`"
            )
        return DEFAULT_SERVICE_ACCOUNT

    def auth_token(self, seconds: int = 3600, *, server: str | None = None) -> str:
        """A short-lived bearer token for the ServiceAccount (TokenRequest API), living
        `seconds` (600 to 86 400; the API server refuses longer ones for `kitaru-client`).

        Needs RBAC in the project: `create` on `serviceaccounts/token`. The default
        account, `kitaru-client`, is created on first use with invoke-and-read rights
        only (`build_client_identity`) when the caller may do so (a project admin, such as
        the local cluster's kubeconfig user); others get the commands to ask for. Before a
        token of it is returned, the API server is asked what that token may do
        (SelfSubjectRulesReview): one that may do more than the client Role is refused.
        `server`: refuse unless the connection's API server is that one (a printed script
        names the server its token is for).
        """
        if server is not None:
            self._check_server(server)
        if not CLIENT_TOKEN_MIN_SECONDS <= seconds <= CLIENT_TOKEN_MAX_SECONDS:
            raise InvalidArguments(
                f"a token lives {CLIENT_TOKEN_MIN_SECONDS} to {CLIENT_TOKEN_MAX_SECONDS} "
                f"seconds (a day), not {seconds}",
                kind="InvalidDuration",
            )
        account = self.service_account()
        namespace = self.project
        try:
            token = self.kube.request_token(account, seconds)
        except NotFound as exc:
            if account != DEFAULT_SERVICE_ACCOUNT:
                raise NotFound(
                    f"ServiceAccount {account!r} not found in project {namespace!r}: create it "
                    f"(kubectl create serviceaccount {account} -n {namespace}) or name another "
                    "with KITARU_SERVICE_ACCOUNT",
                    kind="ServiceAccountNotFound",
                ) from exc
            self._create_client_identity(account, namespace)
            token = self.kube.request_token(account, seconds)
        except Rejected as exc:
            raise Rejected(
                f"cannot mint a token for ServiceAccount {account!r} in {namespace!r}: "
                f"{exc.message} (needs RBAC: {TOKEN_RBAC})"
            ) from exc
        if account == DEFAULT_SERVICE_ACCOUNT:
            self._check_client_rights(account, namespace, token)
        return token

    def _check_server(self, server: str) -> None:
        actual = self.connection.server.value or ""
        if not same_server(server, actual):
            raise KitaruConnectionError(
                f"this token would be for {actual} ({self.connection.server.source}), not "
                f"{server}, the server it was asked for: switch to that server's connection "
                "(kubectl config use-context, KITARU_SERVER_URL or kitaru login), or "
                "regenerate the script against the active one",
                kind="ServerMismatch",
            )

    def _check_client_rights(self, account: str, namespace: str, token: str) -> None:
        """Refuse a client token that may do more than the client Role (`CLIENT_RULES`),
        whichever Role or binding grants it: the API server says what the token may do."""
        rules = Kube(self.connection.with_token(token)).rules_review()
        extra = extra_grants(rules)
        if extra:
            raise Rejected(too_broad_message(account, namespace, extra), kind="ClientTooBroad")

    def _create_client_identity(self, account: str, namespace: str) -> None:
        from kitaru.core.manifests import build_client_identity

        try:
            self.kube.apply_rbac(build_client_identity(account))
        except Rejected as exc:
            raise Rejected(
                f"ServiceAccount {account!r} does not exist in project {namespace!r} and you "
                f"may not create it ({exc.message}); ask a project admin to run: kitaru auth "
                f"token -o json >/dev/null (with their connection), or: "
                f"{client_identity_hint(account, namespace)} (the chart's client role: invoke "
                "and read only)",
                kind="ServiceAccountNotFound",
            ) from exc

    def server_version(self) -> str:
        return self.kube.server_version()
