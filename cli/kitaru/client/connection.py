"""Which API server, which credentials, which project (namespace) — and where each came from.

Every value is resolved on its own, first match wins:

1. environment: `KITARU_SERVER_URL`, `KITARU_AUTH_TOKEN`, `KITARU_PROJECT`
   (plus `KITARU_CA_FILE`, `KITARU_SERVICE_ACCOUNT`);
2. the connection saved by `kitaru login` (`~/.config/kitaru/connection.json`, mode 600);
3. the current kubeconfig context (the files of `$KUBECONFIG` merged as kubectl does,
   or `~/.kube/config`: `kitaru.kubeconfig`).

Credentials and the CA certificate are only taken from a source that names the same
server, so a token is never sent to a server it was not saved for. `combine()` is pure;
`resolve_connection()` reads the environment, the saved file and the kubeconfig.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kitaru.client.errors import KitaruConnectionError
from kitaru.kubeconfig import KubeContext, current_context, kubeconfig_paths

ENV_SERVER = "KITARU_SERVER_URL"
ENV_TOKEN = "KITARU_AUTH_TOKEN"
ENV_PROJECT = "KITARU_PROJECT"
ENV_CA_FILE = "KITARU_CA_FILE"
ENV_SERVICE_ACCOUNT = "KITARU_SERVICE_ACCOUNT"

NOT_SET = "not set"
LOGIN_HINT = "kitaru login URL --api-key TOKEN --project NAMESPACE"


@dataclass(frozen=True)
class Setting:
    """One connection value and where it came from (`source` is human-readable)."""

    value: str | None
    source: str = NOT_SET

    @property
    def is_set(self) -> bool:
        return bool(self.value)


UNSET = Setting(None)


@dataclass(frozen=True)
class SavedConnection:
    """What `kitaru login` stores."""

    server: str
    token: str
    project: str
    ca_file: str | None = None
    service_account: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SavedConnection:
        return cls(
            server=str(data.get("server", "")),
            token=str(data.get("token", "")),
            project=str(data.get("project", "")),
            ca_file=data.get("ca_file") or None,
            service_account=data.get("service_account") or None,
        )


@dataclass(frozen=True)
class Impersonation:
    """Act as another user (Kubernetes impersonation: `Impersonate-User`/`-Group`); the
    connection's own identity needs `impersonate` on those users and groups."""

    user: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Connection:
    """A resolved connection; `require()` before talking to the server."""

    server: Setting = UNSET
    token: Setting = UNSET
    project: Setting = UNSET
    ca_file: Setting = UNSET
    service_account: Setting = UNSET
    kube: KubeContext | None = None
    ca_data: str | None = field(default=None, repr=False)
    impersonate: Impersonation | None = None

    @property
    def uses_kubeconfig_credentials(self) -> bool:
        """True when auth comes from the kubeconfig user (certificates, exec plugins, tokens)."""
        return not self.token.is_set and self.kube is not None and self._kube_is_server

    @property
    def _kube_is_server(self) -> bool:
        return self.kube is not None and self.kube.server == self.server.value

    @property
    def namespace(self) -> str:
        return self.require().project.value or ""

    def missing(self) -> list[str]:
        """What to set, one line per missing piece (empty when complete)."""
        problems = []
        if not self.server.is_set:
            problems.append(f"no server: set {ENV_SERVER}, run `{LOGIN_HINT}`, or use a kubeconfig")
        elif not (self.token.is_set or self.uses_kubeconfig_credentials):
            problems.append(f"no credentials for {self.server.value}: set {ENV_TOKEN}")
        if not self.project.is_set:
            problems.append(f"no project: set {ENV_PROJECT} (the Kubernetes namespace)")
        return problems

    def require(self) -> Connection:
        """This connection, or a KitaruConnectionError saying what to set."""
        problems = self.missing()
        if problems:
            raise KitaruConnectionError(
                "the Kitaru connection is incomplete: " + "; ".join(problems)
            )
        return self

    def with_token(self, token: str) -> Connection:
        """This connection authenticated by `token` instead (same server, CA and project)."""
        return Connection(
            server=self.server,
            token=Setting(token, "minted"),
            project=self.project,
            ca_file=self.ca_file,
            service_account=self.service_account,
            ca_data=self.ca_data,
        )

    def ca_path(self, cache_dir: Path | None = None) -> str | None:
        """A CA file for tools that need a path (curl); embedded CA data is written once."""
        if self.ca_file.is_set:
            return self.ca_file.value
        if not self.ca_data:
            return None
        pem = base64.b64decode(self.ca_data)
        directory = cache_dir or cache_home() / "ca"
        path = directory / f"{hashlib.sha256(pem).hexdigest()[:16]}.crt"
        if not path.exists():
            directory.mkdir(parents=True, exist_ok=True)
            path.write_bytes(pem)
        return str(path)

    def describe(self) -> list[dict[str, str]]:
        """Each value with its source, tokens masked (for `kitaru info` / `status`)."""
        token = mask(self.token.value) if self.token.is_set else None
        if token is None and self.uses_kubeconfig_credentials and self.kube:
            token = "(kubeconfig credentials)"
            token_source = f"kubeconfig context {self.kube.context!r}"
        else:
            token_source = self.token.source
        rows = [
            ("server", self.server.value, self.server.source),
            ("auth token", token, token_source),
            ("project", self.project.value, self.project.source),
            (
                "ca file",
                self.ca_file.value or ("(embedded)" if self.ca_data else None),
                self.ca_file.source if self.ca_file.is_set else self._ca_data_source(),
            ),
            ("service account", self.service_account.value, self.service_account.source),
        ]
        return [{"name": n, "value": v or "", "source": s} for n, v, s in rows]

    def _ca_data_source(self) -> str:
        if self.ca_data and self.kube:
            return f"kubeconfig context {self.kube.context!r}"
        return NOT_SET


def mask(secret: str | None) -> str:
    """A token shown without revealing it: a short prefix only, never the length."""
    if not secret:
        return ""
    return (secret[:4] if len(secret) >= 12 else "") + "********"


def combine(
    env: Mapping[str, str],
    saved: SavedConnection | None,
    kube: KubeContext | None,
    saved_path: str = "saved login",
) -> Connection:
    """Pure resolution of each value from the environment, the saved login and the kubeconfig."""
    login = f"kitaru login ({saved_path})"
    kube_source = f"kubeconfig context {kube.context!r} ({kube.path})" if kube else NOT_SET

    server = _first(
        (env.get(ENV_SERVER), f"env {ENV_SERVER}"),
        (saved.server if saved else None, login),
        (kube.server if kube else None, kube_source),
    )
    saved_same = saved is not None and saved.server == server.value
    kube_same = kube is not None and kube.server == server.value

    token = _first(
        (env.get(ENV_TOKEN), f"env {ENV_TOKEN}"),
        (saved.token if saved_same and saved else None, login),
    )
    project = _first(
        (env.get(ENV_PROJECT), f"env {ENV_PROJECT}"),
        (saved.project if saved else None, login),
        (kube.namespace if kube else None, kube_source),
        ("default" if kube else None, f"{kube_source}, no namespace set"),
    )
    ca_file = _first(
        (env.get(ENV_CA_FILE), f"env {ENV_CA_FILE}"),
        (saved.ca_file if saved_same and saved else None, login),
        (kube.ca_file if kube_same and kube else None, kube_source),
    )
    service_account = _first(
        (env.get(ENV_SERVICE_ACCOUNT), f"env {ENV_SERVICE_ACCOUNT}"),
        (saved.service_account if saved else None, login),
    )
    ca_data = kube.ca_data if kube_same and kube and not ca_file.is_set else None
    return Connection(
        server=server,
        token=token,
        project=project,
        ca_file=ca_file,
        service_account=service_account,
        kube=kube,
        ca_data=ca_data,
    )


def _first(*candidates: tuple[str | None, str]) -> Setting:
    for value, source in candidates:
        if value:
            return Setting(value, source)
    return UNSET


# --- reading the sources --------------------------------------------------------


def config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kitaru"


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kitaru"


def saved_connection_path() -> Path:
    return config_home() / "connection.json"


def load_saved(path: Path | None = None) -> SavedConnection | None:
    path = path or saved_connection_path()
    try:
        return SavedConnection.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise KitaruConnectionError(f"cannot read the saved connection {path}: {exc}") from exc


def save_connection(saved: SavedConnection, path: Path | None = None) -> Path:
    """Write the login atomically with mode 600 (it holds a token)."""
    path = path or saved_connection_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(saved.to_json(), handle, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def load_kube_context(env: Mapping[str, str]) -> KubeContext | None:
    """The current context of the merged kubeconfig (`kitaru.kubeconfig`), or None."""
    import yaml
    from kubernetes.config.config_exception import ConfigException

    paths = kubeconfig_paths(env)
    try:
        return current_context(paths)
    except (ConfigException, OSError, yaml.YAMLError) as exc:
        raise KitaruConnectionError(f"cannot read kubeconfig {paths}: {exc}") from exc


# What the kubelet mounts into a pod for its ServiceAccount.
POD_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def in_cluster_connection(
    env: Mapping[str, str] | None = None, account_dir: Path = POD_ACCOUNT_DIR
) -> Connection:
    """The connection of a pod: its ServiceAccount's token, CA and namespace, and the API
    server's Service (`KITARU_PROJECT` still names another project). The kubelet rotates
    the token file, so call this again rather than keep the result for hours."""
    env = os.environ if env is None else env
    host = env.get("KUBERNETES_SERVICE_HOST")
    if not host:
        raise KitaruConnectionError(
            "not running in a pod (no KUBERNETES_SERVICE_HOST): drop --in-cluster to use "
            "the active connection"
        )
    port = env.get("KUBERNETES_SERVICE_PORT", "443")
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    source = f"pod ServiceAccount ({account_dir})"
    try:
        token = (account_dir / "token").read_text().strip()
        namespace = (account_dir / "namespace").read_text().strip()
    except OSError as exc:
        raise KitaruConnectionError(f"cannot read the pod's ServiceAccount: {exc}") from exc
    return Connection(
        server=Setting(server, "env KUBERNETES_SERVICE_HOST"),
        token=Setting(token, source),
        project=_first((env.get(ENV_PROJECT), f"env {ENV_PROJECT}"), (namespace, source)),
        ca_file=Setting(str(account_dir / "ca.crt"), source),
    )


def resolve_connection(env: Mapping[str, str] | None = None) -> Connection:
    """The active connection (not yet checked for completeness: call `.require()`)."""
    env = os.environ if env is None else env
    path = saved_connection_path()
    return combine(env, load_saved(path), load_kube_context(env), saved_path=str(path))
