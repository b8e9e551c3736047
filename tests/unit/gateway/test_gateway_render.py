"""Rendering haproxy.cfg for every target, checked by the real ``haproxy -c``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.support.settings import PlatformSettings

from snapshoe.gateway import (
    GatewayConfigError,
    Target,
    check_config,
    haproxy_command,
    render_config,
    write_config,
)
from snapshoe.kernel.auth import ensure_dev_keys, load_public_key, public_jwk
from snapshoe.kernel.settings import Settings

TARGETS: list[Target] = ["local", "compose", "k8s"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = PlatformSettings(
        data_dir=tmp_path / "data",
        gateway_port=18500,
        users_port=18501,
        products_port=18502,
        orders_port=18503,
        payments_port=18504,
        sandbox_pg_port=18505,
        gateway_stats_port=18506,
        login_rate_per_minute=7,
        verification_rate_per_minute=9,
    )
    ensure_dev_keys(s)
    return s


def kid_of(settings: Settings) -> str:
    return public_jwk(load_public_key(settings.public_key_path))["kid"]


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_passes_haproxy_check(
    settings: Settings, tmp_path: Path, target: Target
) -> None:
    path = tmp_path / f"{target}.cfg"
    path.write_text(render_config(settings, target))
    check_config(path)  # zero-warning mode: raises on any warning


@pytest.mark.parametrize("target", TARGETS)
def test_jwt_checks_are_pinned_in_every_target(settings: Settings, target: Target) -> None:
    cfg = render_config(settings, target)
    assert f'-m str -- "{kid_of(settings)}"' in cfg
    assert "jwt_header_query('$.alg') -m str ES256" in cfg
    assert "jwt_header_query('$.typ') -m str at+jwt" in cfg
    assert f'-m str -- "{settings.jwt_issuer}"' in cfg
    assert f'-m str -- "{settings.jwt_audience}"' in cfg
    assert 'jwt_verify("ES256",' in cfg
    assert ") -m int 1" in cfg
    assert "sc_http_req_rate(1,st_login) gt 7" in cfg
    assert "sc_http_req_rate(2,st_verification) gt 9" in cfg


def test_local_points_at_loopback_service_ports(settings: Settings) -> None:
    cfg = render_config(settings, "local")
    assert "bind 127.0.0.1:18500" in cfg
    assert "bind 127.0.0.1:18506" in cfg
    for port in (18501, 18502, 18503, 18504, 18505):
        assert f"127.0.0.1:{port} " in cfg
    assert "server-template" not in cfg
    assert "resolvers" not in cfg
    assert f'"{settings.public_key_path.resolve()}"' in cfg


def test_compose_uses_docker_dns(settings: Settings) -> None:
    cfg = render_config(settings, "compose")
    assert "nameserver docker 127.0.0.11:53" in cfg
    assert "bind 0.0.0.0:18500" in cfg
    assert "server-template users 1-8 users:18501 " in cfg
    assert "server-template sandbox_pg 1-8 sandbox-pg:18505 " in cfg
    assert cfg.count("init-addr none") == 7  # products twice (streams), and web


def test_k8s_uses_headless_services(settings: Settings) -> None:
    cfg = render_config(settings, "k8s", k8s_namespace="drops")
    assert "parse-resolv-conf" in cfg
    assert "orders-headless.drops.svc.cluster.local:18503" in cfg
    assert cfg.count("init-addr none") == 7  # products twice (streams), and web


def test_settings_values_cannot_inject_directives(settings: Settings, tmp_path: Path) -> None:
    tricky = settings.model_copy(update={"jwt_issuer": 'https://x/"$HOME\\ # not a comment'})
    path = tmp_path / "tricky.cfg"
    path.write_text(render_config(tricky))
    check_config(path)
    assert r'-m str -- "https://x/\"\$HOME\\ # not a comment"' in path.read_text()
    evil = settings.model_copy(update={"jwt_audience": "api\n    http-request allow"})
    with pytest.raises(ValueError, match="line break"):
        render_config(evil)


def test_check_config_reports_haproxy_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cfg"
    bad.write_text("frontend x\n    bind 127.0.0.1:1\n    no-such-directive on\n")
    with pytest.raises(GatewayConfigError, match="no-such-directive"):
        check_config(bad)


def test_check_config_treats_warnings_as_errors(tmp_path: Path) -> None:
    # No timeouts in a proxy: valid for HAProxy, but it warns.
    cfg = tmp_path / "warn.cfg"
    cfg.write_text("defaults\n    mode http\nfrontend x\n    bind 127.0.0.1:1\n")
    with pytest.raises(GatewayConfigError, match="WARNING"):
        check_config(cfg)


def test_write_config_and_command(settings: Settings) -> None:
    path = write_config(settings)
    assert path == settings.data_dir / "haproxy.cfg"
    assert path.read_text() == render_config(settings, "local")
    cmd = haproxy_command(settings, path)
    assert Path(cmd[0]).name == "haproxy"
    assert cmd[1:] == ["-db", "-f", str(path)]


def test_rotating_the_key_changes_the_pinned_kid(settings: Settings) -> None:
    before = render_config(settings)
    settings.public_key_path.unlink()
    settings.private_key_path.unlink()
    ensure_dev_keys(settings)
    after = render_config(settings)
    assert kid_of(settings) in after
    assert kid_of(settings) not in before


@pytest.mark.parametrize("target", TARGETS)
def test_a_kid_starting_with_a_dash_still_parses(tmp_path: Path, target: Target) -> None:
    """A base64url kid starts with '-' one time in 64; HAProxy read it as an ACL option until
    patterns were put behind '--' (found by a CI run that drew such a key)."""
    for attempt in range(2000):
        s = PlatformSettings(data_dir=tmp_path / f"k{attempt}")
        ensure_dev_keys(s)
        if kid_of(s).startswith("-"):
            break
    else:
        pytest.fail("no key with a kid starting with '-' in 2,000 tries")
    path = tmp_path / f"{target}.cfg"
    path.write_text(render_config(s, target))
    check_config(path)


@pytest.mark.parametrize("target", TARGETS)
def test_the_path_is_normalized_before_any_rule_reads_it(
    settings: Settings, target: Target
) -> None:
    cfg = render_config(settings, target)
    assert "expose-experimental-directives" in cfg.split("\ndefaults")[0]  # in global
    frontend = cfg.split("\nfrontend api")[1]
    steps = [
        "normalize-uri percent-decode-unreserved strict",
        "normalize-uri path-merge-slashes",
        "normalize-uri path-strip-dot\n",
        "normalize-uri path-strip-dotdot full",
        '"ambiguous_path"',
    ]
    at = [frontend.index(step) for step in steps]
    assert at == sorted(at)
    # No rule reads the path before it is one spelling; the first that does is the refusal.
    use = re.search(r"\{ path |\bpath(_beg)? /", frontend)
    assert use is not None
    first_path_use = use.start()
    assert at[-2] < first_path_use
    line_start = frontend.rindex("\n", 0, first_path_use)
    assert '"ambiguous_path"' in frontend[line_start : frontend.index("\n", first_path_use)]


def test_signup_and_password_reset_are_limited_per_ip(settings: Settings) -> None:
    cfg = render_config(
        settings.model_copy(
            update={"signup_rate_per_minute": 11, "password_reset_rate_per_minute": 13}
        )
    )
    assert "track-sc1 src table st_signup if METH_POST r_signup" in cfg
    assert "sc_http_req_rate(1,st_signup) gt 11" in cfg
    assert "track-sc2 src table st_password_reset if METH_POST r_password_reset" in cfg
    assert "sc_http_req_rate(2,st_password_reset) gt 13" in cfg


def test_queue_joins_are_limited_per_ip_and_the_queue_needs_a_token(settings: Settings) -> None:
    cfg = render_config(settings.model_copy(update={"queue_join_rate_per_minute": 17}))
    assert "track-sc1 src table st_queue_join if METH_POST r_queue_join" in cfg
    assert "sc_http_req_rate(1,st_queue_join) gt 17" in cfg
    assert "http-request set-var(txn.protected) bool(1) if r_queue\n" in cfg


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("environment", ["dev", "test"])
def test_dev_and_test_route_only_the_buyer_side_pg_endpoints(
    settings: Settings, target: Target, environment: str
) -> None:
    cfg = render_config(settings.model_copy(update={"environment": environment}), target)
    pg_lines = [line.strip() for line in cfg.splitlines() if "/pg/" in line and "acl" in line]
    assert pg_lines == [
        "acl r_pg        path /pg/v1/sandbox/authorizations /pg/v1/billing/authorizations/card",
        "acl r_pg_window path /pg/v1/sandbox/checkout",
    ]
    assert "use_backend sandbox_pg if METH_POST r_pg\n" in cfg
    assert "use_backend sandbox_pg if METH_GET r_pg_window or METH_POST r_pg_window\n" in cfg


@pytest.mark.parametrize("target", TARGETS)
def test_production_routes_no_pg_at_all(settings: Settings, tmp_path: Path, target: Target) -> None:
    cfg = render_config(settings.model_copy(update={"environment": "production"}), target)
    # /pg is named only to keep it from the store (a gateway 404, as any unrouted path).
    assert [line.strip() for line in cfg.splitlines() if "/pg" in line] == [
        "acl r_not_web path_beg /api /internal /pg"
    ]
    assert "r_pg" not in cfg
    assert "sandbox_pg" not in cfg
    assert "sandbox-pg" not in cfg
    path = tmp_path / f"{target}.cfg"
    path.write_text(cfg)
    check_config(path)
