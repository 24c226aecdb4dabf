"""The RBAC that `python -m kitaru_localnode.gitops up` gives Flux's controllers."""

from __future__ import annotations

from kitaru_localnode.gitops import CONTROLLER_USERS, NAMESPACE, rbac_manifests

UPSTREAM_ROLE = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRole",
    "metadata": {"name": "manager-role"},
    "rules": [{"apiGroups": ["source.toolkit.fluxcd.io"], "resources": ["*"], "verbs": ["*"]}],
}


def test_each_controller_is_bound_as_flux_installs_it() -> None:
    namespace, role, *bindings = rbac_manifests(UPSTREAM_ROLE)
    assert namespace == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    # The upstream role, under a name of ours, its rules unchanged.
    assert role["metadata"] == {"name": "kitaru-flux-source-controller"}
    assert role["rules"] == UPSTREAM_ROLE["rules"]
    granted = {
        b["subjects"][0]["name"]: b["roleRef"]["name"]
        for b in bindings
        if b["kind"] == "ClusterRoleBinding"
    }
    assert granted == {
        CONTROLLER_USERS["source-controller"]: "kitaru-flux-source-controller",
        CONTROLLER_USERS["kustomize-controller"]: "cluster-admin",
    }
    assert all(b["subjects"][0]["kind"] == "User" for b in bindings)
    assert UPSTREAM_ROLE["metadata"] == {"name": "manager-role"}  # not modified in place
