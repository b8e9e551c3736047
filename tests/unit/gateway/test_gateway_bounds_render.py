"""The rendered request bounds (issue 12, items 8 and 15), in every target."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from tests.support.settings import PlatformSettings

from snapshoe.gateway import Target, render_config
from snapshoe.gateway.render import (
    BUFFER_BYTES,
    GATEWAY_ERRORS,
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    REWRITE_RESERVE_BYTES,
)
from snapshoe.kernel import http
from snapshoe.kernel.auth import ensure_dev_keys
from snapshoe.kernel.settings import Settings

TARGETS: list[Target] = ["local", "compose", "k8s"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = PlatformSettings(
        data_dir=tmp_path / "data",
        gateway_request_timeout_seconds=7,
        gateway_max_connections_per_client=42,
    )
    ensure_dev_keys(s)
    return s


@pytest.mark.parametrize("target", TARGETS)
def test_only_a_failed_connect_is_retried(settings: Settings, target: Target) -> None:
    cfg = render_config(settings, target)
    assert re.findall(r"^\s*retry-on .*$", cfg, re.MULTILINE) == ["    retry-on conn-failure"]
    assert "empty-response" not in cfg.replace("Not empty-response", "")


@pytest.mark.parametrize("target", TARGETS)
def test_the_whole_request_is_bounded_by_the_setting(settings: Settings, target: Target) -> None:
    cfg = render_config(settings, target)
    assert "    timeout http-request 7s\n" in cfg
    frontend = cfg.split("\nfrontend api")[1]
    wait = frontend.index("http-request wait-for-body time 7s\n")
    # The body is waited for after the cheap refusals and before any backend is chosen; the
    # chunked-size check reads it right after.
    assert frontend.index("if protected !{ var(txn.jwt_ok) -m bool }") < wait
    assert wait < frontend.index("req.body_len gt 65536") < frontend.index("use_backend")


@pytest.mark.parametrize("target", TARGETS)
def test_connections_are_capped_per_address_at_accept(settings: Settings, target: Target) -> None:
    cfg = render_config(settings, target)
    assert "stick-table type ipv6 size 200k expire 2m store conn_cur" in cfg
    frontend = cfg.split("\nfrontend api")[1]
    track = frontend.index("tcp-request connection track-sc0 src table st_conn")
    reject = frontend.index("tcp-request connection reject if { sc_conn_cur(0,st_conn) gt 42 }")
    assert track < reject < frontend.index("http-request")


def test_one_buffer_holds_the_largest_accepted_request() -> None:
    # The gateway's cap is the services' cap, and a capped request (headers, body, HTX block
    # overhead) fits one buffer beside the rewrite reserve, with room to see one byte more.
    assert MAX_BODY_BYTES == http.MAX_BODY_BYTES
    assert BUFFER_BYTES - REWRITE_RESERVE_BYTES >= MAX_HEADER_BYTES + MAX_BODY_BYTES + 4096


@pytest.mark.parametrize("target", TARGETS)
def test_every_haproxy_error_is_problem_json(settings: Settings, target: Target) -> None:
    cfg = render_config(settings, target)
    assert f"tune.bufsize {BUFFER_BYTES}\n" in cfg
    for status, code, _ in (*GATEWAY_ERRORS, (431, "request_header_fields_too_large", "")):
        line = next(
            x
            for x in cfg.splitlines()
            if f'status {status} content-type "application/problem+json" string \'' in x
        )
        body = json.loads(line.split("string '", 1)[1].split("'", 1)[0])
        assert body["status"] == status
        assert body["code"] == code
    for status in (400, 408, 413, 429, 500, 502, 503, 504):
        assert status in {s for s, _, _ in GATEWAY_ERRORS}
