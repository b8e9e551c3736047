"""The gateway routes exactly the two paths of the API's description to the web tier, before
any service's route (docs/api-additions.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.settings import PlatformSettings

from snapshoe.gateway import Target, check_config, render_config
from snapshoe.kernel.auth import ensure_dev_keys

TARGETS: list[Target] = ["local", "compose", "k8s"]


@pytest.mark.parametrize("target", TARGETS)
def test_the_api_description_goes_to_the_web_tier_first(tmp_path: Path, target: Target) -> None:
    settings = PlatformSettings(data_dir=tmp_path / "data")
    ensure_dev_keys(settings)
    cfg = render_config(settings, target)
    lines = [line.strip() for line in cfg.splitlines()]
    assert "acl r_api_docs  path /api/openapi.json /api/docs" in lines
    routes = [line for line in lines if line.startswith("use_backend")]
    assert routes[0] == "use_backend web if r_api_docs"
    path = tmp_path / f"{target}.cfg"
    path.write_text(cfg)
    check_config(path)
