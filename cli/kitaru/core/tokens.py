"""The project's client identity and the tokens minted for it (pure).

`kitaru auth token` and the printed curl mint short-lived tokens for one ServiceAccount
per project, `kitaru-client`, whose Role may invoke and read and nothing else. These
rules say what that Role holds (`CLIENT_RULES`), which rights beyond it a token would
carry (`extra_grants`, checked against the API server's own answer before a token is
printed), how long a token may live (enforced by admission too), and whether two API
server URLs name the same server (a printed script refuses to mint for another one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kitaru.core.names import DEPLOYMENTS, GROUP, INVOCATIONS, ROUTES

CLIENT_SERVICE_ACCOUNT = "kitaru-client"
# A day: long enough for a nightly job, short enough that a leaked script token dies.
CLIENT_TOKEN_MAX_SECONDS = 86400
CLIENT_TOKEN_MIN_SECONDS = 600  # the TokenRequest API's own minimum
_READ = ("get", "list", "watch")


@dataclass(frozen=True)
class Rule:
    """One RBAC policy rule (resource rules only)."""

    groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]

    def wire(self) -> dict[str, Any]:
        return {
            "apiGroups": list(self.groups),
            "resources": list(self.resources),
            "verbs": list(self.verbs),
        }


# Invoke and follow runs, read versions and routes: the whole of the client Role.
CLIENT_RULES = (
    Rule((GROUP,), (INVOCATIONS,), ("create", *_READ)),
    Rule((GROUP,), (DEPLOYMENTS, ROUTES), _READ),
)
# What every authenticated identity may do (system:basic-user): ask the API server who
# it is and what it may do. A client token carries these whatever its Role says.
SELF_REVIEW_RULES = (
    Rule(
        ("authorization.k8s.io",),
        ("selfsubjectaccessreviews", "selfsubjectrulesreviews"),
        ("create",),
    ),
    Rule(("authentication.k8s.io",), ("selfsubjectreviews",), ("create",)),
)


def _grants(rules: Iterable[Rule]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v) for rule in rules for g in rule.groups for r in rule.resources for v in rule.verbs
    }


_ALLOWED = _grants((*CLIENT_RULES, *SELF_REVIEW_RULES))


def extra_grants(resource_rules: Sequence[Mapping[str, Any]]) -> list[str]:
    """What `resource_rules` (a SelfSubjectRulesReview's `resourceRules`, wire form)
    allow beyond the client Role, as `verb group/resource` phrases, sorted; empty when
    nothing. A wildcard counts as more; a rule limited to named objects counts too."""
    extra = set()
    for rule in resource_rules:
        names = rule.get("resourceNames") or []
        for group in rule.get("apiGroups") or [""]:
            for resource in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    if (group, resource, verb) not in _ALLOWED:
                        what = f"{group}/{resource}" if group else resource
                        extra.add(f"{verb} {what}" + (f" {','.join(names)}" if names else ""))
    return sorted(extra)


def too_broad_message(account: str, namespace: str, extra: Sequence[str]) -> str:
    shown_extra = ", ".join(extra[:8]) + (f" and {len(extra) - 8} more" if len(extra) > 8 else "")
    return (
        f"ServiceAccount {account!r} in project {namespace!r} may do more than invoke and "
        f"read ({shown_extra}), so a token for it would be worth more than a script needs; "
        "none was printed. Ask a project admin to leave it only the client Role: "
        f"kubectl -n {namespace} get rolebindings,clusterrolebindings -o wide | grep {account}"
    )


def client_identity_hint(account: str, namespace: str, role_prefix: str = "kitaru") -> str:
    """How a project admin creates the client identity by hand: the chart's client role
    (invoke and read only), never the consumer role, which may mint tokens itself."""
    return (
        f"kubectl -n {namespace} create serviceaccount {account} && kubectl -n {namespace} "
        f"create rolebinding {account} --clusterrole={role_prefix}-client "
        f"--serviceaccount={namespace}:{account}"
    )


def normalized_server(url: str) -> tuple[str, str, int | None, str]:
    """(scheme, host, port, path) of an API server URL, as compared: case-insensitive
    scheme and host, the scheme's default port made explicit, no trailing slash."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = {"https": 443, "http": 80}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/")


def same_server(a: str, b: str) -> bool:
    return normalized_server(a) == normalized_server(b)
