"""Kubeconfig loading by kubectl's rules, on the `kubernetes` package's loader.

The client (CLI, SDK, MCP) and the operator read a kubeconfig only here:

- `$KUBECONFIG` is a list of files (`os.pathsep`-separated, absent ones skipped) that
  are merged; without it, `~/.kube/config`;
- the first file to define a cluster, user or context of a given name wins, whole;
- the current context is the one of the first file that sets it. The package's merger
  lets the last file win; kubectl does not, so `merge` corrects that one rule;
- credentials are the package's: token, token file, client certificate, exec plugin
  (an `ExecCredential` is asked for when credentials are loaded, and again once it
  expires, through the configuration's refresh hook).

The `kubernetes` package is imported on first use (it takes about 0.3 s), so reading
this module costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_KUBECONFIG = "~/.kube/config"


@dataclass(frozen=True)
class KubeContext:
    """The parts of a kubeconfig context that tell where to connect (not how)."""

    path: str
    context: str
    server: str | None
    namespace: str | None
    ca_file: str | None = None
    ca_data: str | None = None
    has_credentials: bool = False


def kubeconfig_paths(env: Mapping[str, str]) -> str:
    """The kubeconfig files to merge, as kubectl finds them."""
    return env.get("KUBECONFIG") or DEFAULT_KUBECONFIG


def merge(paths: str) -> Any:
    """The merged kubeconfig (the package's `ConfigNode`) of a path list, or None when
    none of the files exists. Raises the package's `ConfigException` (or an OSError,
    a YAMLError) for a file that cannot be read."""
    from kubernetes.config.kube_config import KubeConfigMerger

    merger = KubeConfigMerger(paths)
    if merger.config is None:
        return None
    first = next(
        (
            config["current-context"]
            for config in merger.config_files.values()
            if config.get("current-context")
        ),
        None,
    )
    if first:
        merger.config.value["current-context"] = first
    return merger.config


def current_context(paths: str, context: str | None = None) -> KubeContext | None:
    """Where the current (or the named) context connects; None when there is no such
    context. Runs no credential plugin."""
    config = merge(paths)
    if config is None:
        return None
    name = context or config.safe_get("current-context")
    contexts = config.safe_get("contexts") and config["contexts"]
    found = contexts.get_with_name(name, safe=True) if contexts and name else None
    if found is None:
        return None
    details = found.safe_get("context") or {}
    cluster = _named(config, "clusters", details.get("cluster"))
    user = _named(config, "users", details.get("user"))
    settings = (cluster.safe_get("cluster") or {}) if cluster is not None else {}
    ca_file = settings.get("certificate-authority")
    if ca_file and cluster is not None and cluster.path and not os.path.isabs(ca_file):
        ca_file = str(Path(cluster.path).parent / ca_file)
    return KubeContext(
        path=paths,
        context=str(name),
        server=settings.get("server"),
        namespace=details.get("namespace"),
        ca_file=ca_file,
        ca_data=settings.get("certificate-authority-data"),
        has_credentials=bool(user is not None and user.safe_get("user")),
    )


def _named(config: Any, section: str, name: str | None) -> Any:
    if not name or not config.safe_get(section):
        return None
    return config[section].get_with_name(name, safe=True)


def load_configuration(paths: str, context: str | None = None) -> Any:
    """A `kubernetes.client.Configuration` for the current (or the named) context, its
    credentials loaded (an exec plugin runs now)."""
    from kubernetes import client
    from kubernetes.config.config_exception import ConfigException
    from kubernetes.config.kube_config import KubeConfigLoader

    config = merge(paths)
    if config is None:
        raise ConfigException(f"no kubeconfig file found in {paths!r}")
    configuration = client.Configuration()
    loader = KubeConfigLoader(config_dict=config, active_context=context, config_base_path=None)
    loader.load_and_set(configuration)
    return configuration
