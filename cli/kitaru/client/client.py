"""`KitaruClient`: the one entry point to the API server for the CLI, SDK and MCP server."""

from __future__ import annotations

from functools import cached_property

from kitaru.client.connection import Connection, resolve_connection
from kitaru.client.deployments import Deployments
from kitaru.client.errors import KitaruConnectionError, NotFound, Rejected
from kitaru.client.executions import Executions
from kitaru.client.kube import Kube
from kitaru.client.schedules import Schedules

DEFAULT_SERVICE_ACCOUNT = "kitaru-client"
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

    def auth_token(self, seconds: int = 3600) -> str:
        """A short-lived bearer token for the ServiceAccount (TokenRequest API).

        Needs RBAC in the project: `create` on `serviceaccounts/token`. The default
        account, `kitaru-client`, is created on first use with invoke-and-read rights
        only (`build_client_identity`) when the caller may do so (a project admin, such as
        the local cluster's kubeconfig user); others get the commands to ask for.
        """
        account = self.service_account()
        namespace = self.project
        try:
            return self.kube.request_token(account, seconds)
        except NotFound as exc:
            if account != DEFAULT_SERVICE_ACCOUNT:
                raise NotFound(
                    f"ServiceAccount {account!r} not found in project {namespace!r}: create it "
                    f"(kubectl create serviceaccount {account} -n {namespace}) or name another "
                    "with KITARU_SERVICE_ACCOUNT",
                    kind="ServiceAccountNotFound",
                ) from exc
            self._create_client_identity(account, namespace)
        except Rejected as exc:
            raise Rejected(
                f"cannot mint a token for ServiceAccount {account!r} in {namespace!r}: "
                f"{exc.message} (needs RBAC: {TOKEN_RBAC})"
            ) from exc
        return self.kube.request_token(account, seconds)

    def _create_client_identity(self, account: str, namespace: str) -> None:
        from kitaru.core.manifests import build_client_identity

        try:
            self.kube.apply_rbac(build_client_identity(account))
        except Rejected as exc:
            raise Rejected(
                f"ServiceAccount {account!r} does not exist in project {namespace!r} and you "
                f"may not create it ({exc.message}); ask a project admin to run: kitaru auth "
                f"token -o json >/dev/null (with their connection), or: kubectl -n {namespace} "
                f"create serviceaccount {account} && kubectl -n {namespace} create rolebinding "
                f"{account} --clusterrole=kitaru-consumer --serviceaccount={namespace}:{account}",
                kind="ServiceAccountNotFound",
            ) from exc

    def server_version(self) -> str:
        return self.kube.server_version()
