"""The operator's flags and their environment variables (`kitaru_operator.main`)."""

from __future__ import annotations

import pytest
from kitaru_operator.main import config_from, parse_args


def test_the_default_runner_image_is_unset_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KITARU_DEFAULT_RUNNER_IMAGE", raising=False)
    assert config_from(parse_args(["-n", "team-a"])).default_runner_image is None
    monkeypatch.setenv("KITARU_DEFAULT_RUNNER_IMAGE", "registry.local/runner:1")
    assert config_from(parse_args(["-n", "team-a"])).default_runner_image == (
        "registry.local/runner:1"
    )
    flag = parse_args(["-A", "--default-runner-image", "registry.local/runner@sha256:ab"])
    assert config_from(flag).default_runner_image == "registry.local/runner@sha256:ab"
