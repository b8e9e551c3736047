"""What the gateway holds: its maxconn from settings, the waiting room's streams on a backend of
their own, and the processes `snapshoe up` starts for it, in every target."""

from __future__ import annotations

import re
from pathlib import Path

import pydantic
import pytest
from tests.support.settings import PlatformSettings

from snapshoe.cli import _gateway_specs, _process_stages
from snapshoe.gateway import Target, check_config, haproxy_command, render_config
from snapshoe.gateway.render import STREAM_TIMEOUT_SECONDS, frontend_maxconn
from snapshoe.kernel.auth import ensure_dev_keys
from snapshoe.kernel.settings import Settings
from snapshoe.products.queue_stream import HEARTBEAT_SECONDS
from snapshoe.supervisor import ProcessSpec

TARGETS: list[Target] = ["local", "compose", "k8s"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = PlatformSettings(data_dir=tmp_path / "data", products_port=18502)
    ensure_dev_keys(s)
    return s


def section(cfg: str, header: str) -> str:
    return cfg.split(f"\n{header}\n")[1].split("\n\n")[0]


@pytest.mark.parametrize("target", TARGETS)
def test_maxconn_defaults_to_todays_figures(settings: Settings, target: Target) -> None:
    cfg = render_config(settings, target)
    assert "    maxconn 8000\n" in section(cfg, "global")
    assert "    maxconn 6000\n" in cfg.split("\nfrontend api\n")[1]


@pytest.mark.parametrize("target", TARGETS)
def test_maxconn_follows_the_setting(settings: Settings, tmp_path: Path, target: Target) -> None:
    cfg = render_config(settings.model_copy(update={"gateway_maxconn": 9500}), target)
    assert "    maxconn 9500\n" in section(cfg, "global")
    # A quarter stays free for the stats frontend: 3/4 of 9500.
    assert "    maxconn 7125\n" in cfg.split("\nfrontend api\n")[1]
    path = tmp_path / f"{target}.cfg"
    path.write_text(cfg)
    check_config(path)


def test_the_frontend_keeps_todays_share() -> None:
    assert frontend_maxconn(8000) == 6000
    assert frontend_maxconn(9500) == 7125


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("gateway_maxconn", 9501),  # 2 fds each would pass the 20,000 a process may open
        ("gateway_maxconn", 99),
        ("gateway_max_connections_per_client", 9501),
        ("gateway_processes", 0),
        ("gateway_processes", 9),
    ],
)
def test_capacity_settings_are_bounded(field: str, value: int) -> None:
    with pytest.raises(pydantic.ValidationError):
        PlatformSettings(**{field: value})


def test_one_address_may_hold_as_many_as_a_process() -> None:
    # A benchmark from 127.0.0.1 holding ~7,000 streams in one gateway process.
    s = PlatformSettings(gateway_max_connections_per_client=9500)
    assert s.gateway_max_connections_per_client == 9500
    assert PlatformSettings().gateway_max_connections_per_client == 300


@pytest.mark.parametrize("target", TARGETS)
def test_the_ticket_stream_has_a_backend_of_its_own(settings: Settings, target: Target) -> None:
    cfg = render_config(settings.model_copy(update={"gateway_maxconn": 9000}), target)
    frontend = cfg.split("\nfrontend api\n")[1].split("\nbackend ")[0]
    events = re.search(r"acl r_queue_events path_reg (\S+)\n", frontend)
    queue = re.search(r"acl r_queue +path_reg (\S+)\n", frontend)
    assert events
    assert queue
    assert events.group(1) == "^/api/products/[^/]+/queue/me/events$"
    stream = "/api/products/P1/queue/me/events"
    # The stream route is one the token check covers (r_queue makes it protected).
    assert re.search(queue.group(1), stream)
    assert re.search(events.group(1), stream)
    assert not re.search(events.group(1), stream + "/")
    assert not re.search(events.group(1), "/api/products/P1/queue/me")
    # Chosen before products' own backend (first match wins), after every http-request rule.
    use = frontend.index("use_backend products_streams if r_queue_events\n")
    assert use < frontend.index("use_backend products   if r_products or r_admin\n")
    assert frontend.rindex("http-request ") < use
    streams = section(cfg, "backend products_streams")
    assert f"timeout server {STREAM_TIMEOUT_SECONDS}s" in streams
    # Frames are sent at once (without it, ~200 ms each behind MSG_MORE); short requests keep
    # HAProxy's coalescing.
    assert "option http-no-delay" in streams
    products = section(cfg, "backend products")
    assert "http-no-delay" not in products
    if target == "local":
        assert "server products_streams 127.0.0.1:18502 maxconn 9000" in streams
        assert "server products 127.0.0.1:18502 maxconn 1000" in products
    else:
        address = "products:18502" if target == "compose" else "products-headless."
        assert f"server-template products_streams 1-8 {address}" in streams
        assert streams.endswith(" maxconn 9000")
        assert products.endswith(" maxconn 1000")
        assert "option httpchk GET /healthz" in streams


def test_the_stream_timeout_outlasts_missed_heartbeats() -> None:
    # A stream is idle only between heartbeats; the short requests' 30 s would allow one miss.
    assert STREAM_TIMEOUT_SECONDS >= 3 * HEARTBEAT_SECONDS


@pytest.mark.parametrize("processes", [1, 3])
def test_up_starts_the_gateway_processes_last(
    settings: Settings, tmp_path: Path, processes: int
) -> None:
    s = settings.model_copy(update={"gateway_processes": processes})
    config = tmp_path / "haproxy.cfg"
    argv = haproxy_command(s, config)
    names = ["gateway", "gateway-2", "gateway-3"][:processes]
    assert _process_stages(s, config)[-1] == [ProcessSpec(n, argv) for n in names]
    assert _gateway_specs(s, config) == [ProcessSpec(n, argv) for n in names]


@pytest.mark.parametrize("target", TARGETS)
def test_streams_go_to_processes_of_their_own_when_up_runs_them(
    settings: Settings, target: Target
) -> None:
    s = settings.model_copy(update={"products_stream_workers": 2, "products_streams_port": 18506})
    streams = section(render_config(s, target), "backend products_streams")
    products = section(render_config(s, target), "backend products")
    if target == "local":
        assert "server products_streams 127.0.0.1:18506 " in streams
    else:  # compose and Kubernetes run products' own replicas for them (docs/waiting-room.md)
        assert ":18506" not in streams
    assert ":18506" not in products
    alone = settings.model_copy(update={"products_stream_workers": 0})
    assert ":18506" not in render_config(alone, target)


@pytest.mark.parametrize("workers", [0, 2])
def test_up_starts_the_stream_processes_with_products(
    settings: Settings, tmp_path: Path, workers: int
) -> None:
    s = settings.model_copy(update={"products_stream_workers": workers})
    stages = _process_stages(s, tmp_path / "haproxy.cfg")
    stage = next(st for st in stages if any(p.name == "products" for p in st))
    streams = [p for p in stage if p.name == "products_streams"]
    assert len(streams) == (1 if workers else 0)
    if workers:
        assert streams[0].argv[-2:] == ["serve", "products_streams"]
