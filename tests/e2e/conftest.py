"""Fixtures of the end-to-end tier: the chart's roles applied to the cluster."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from chart_support import render_operator_rbac, render_user_roles, unique
from support import kubectl


@pytest.fixture(scope="module")
def roles(cluster: Any) -> Iterator[str]:
    """Apply the chart's producer/consumer/viewer ClusterRoles; yield their name prefix."""
    prefix = unique("kt-rbac")
    rendered = render_user_roles(prefix)
    kubectl("apply", "-f", "-", input=rendered)
    yield prefix
    kubectl("delete", "-f", "-", "--ignore-not-found", input=rendered, check=False)


@pytest.fixture
def operator_account(namespace: str) -> Iterator[str]:
    """The chart's operator ServiceAccount and RBAC, released into `namespace` and
    watching it; yields the ServiceAccount's name."""
    release = unique("kt-op")
    rendered = render_operator_rbac(release, namespace)
    kubectl("apply", "-f", "-", input=rendered)
    yield f"{release}-kitaru-operator"
    kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false", input=rendered, check=False)
