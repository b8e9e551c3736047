"""Render ``haproxy.cfg`` from the package template and check it with ``haproxy -c``.

Values that reach the config (issuer, audience, kid, key path) are quoted here, so a setting can
never inject a directive. The JWT ``kid`` is derived from the public key at render time (RFC 7638
thumbprint, as the kernel's issuer does): rotating the key means re-rendering the config.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jinja2

from snapshoe.gateway.settings import GatewaySettings
from snapshoe.kernel.auth import load_public_key, public_jwk
from snapshoe.kernel.internal import web_edge_token
from snapshoe.kernel.settings import Settings, settings_for

Target = Literal["local", "compose", "k8s"]

# Headers a client may send to pose as someone; the gateway deletes them (regex rules in the
# template also drop every X-User-*, X-Forwarded-* and X-Auth* header).
STRIPPED_HEADERS: tuple[str, ...] = (
    "X-Email-Verified",
    "X-Roles",
    "X-Role",
    "X-Admin",
    "X-Principal",
    "X-Remote-User",
    "X-Real-IP",
    "X-Client-IP",
    "X-Original-URL",
    "X-Rewrite-URL",
    "X-Original-Forwarded-For",
    "X-Http-Method-Override",
    "X-Method-Override",
    "Forwarded",
    "Remote-User",
)

# Errors HAProxy itself may produce (every status `http-error` accepts in 2.6), rendered as
# problem+json. HAProxy 2.6 has no 431: headers over the cap get the rule's own 431 instead.
GATEWAY_ERRORS: tuple[tuple[int, str, str], ...] = (
    (400, "bad_request", "Bad request"),
    (401, "unauthorized", "Authentication required"),
    (403, "forbidden", "Forbidden"),
    (404, "not_found", "Not found"),
    (405, "method_not_allowed", "Method not allowed"),
    (408, "request_timeout", "Request timeout"),
    (410, "gone", "Gone"),
    (413, "payload_too_large", "Request body too large"),
    (425, "too_early", "Too early"),
    (429, "too_many_requests", "Too many requests"),
    (500, "internal_error", "Internal error"),
    (501, "not_implemented", "Not implemented"),
    (502, "bad_gateway", "Bad gateway"),
    (503, "service_unavailable", "Service unavailable"),
    (504, "gateway_timeout", "Gateway timeout"),
)

# The services refuse bodies over 64 KiB (snapshoe.kernel.http.MAX_BODY_BYTES); the gateway
# holds every body it accepts in one buffer until it is complete, so a slow body never reaches
# a service and is bounded by the request timeout.
MAX_BODY_BYTES = 64 * 1024
# The whole header block; a request over it gets 431 problem+json.
MAX_HEADER_BYTES = 8 * 1024
# One buffer must hold the largest accepted request: headers, body, HTX overhead and the
# rewrite reserve (bigger headers would be refused by HAProxy's parser with a bare HTML 400).
BUFFER_BYTES = 80 * 1024
REWRITE_RESERVE_BYTES = 1024
# Per-server cap of the short requests' backends; the global and frontend maxconn come from
# SNAPSHOE_GATEWAY_MAXCONN (frontend_maxconn below).
SERVER_MAXCONN = 1000
# The services send a stream a heartbeat at least every 15 s; an idle stream survives three.
STREAM_TIMEOUT_SECONDS = 45
TEMPLATE_SLOTS = 8  # server-template slots per service (compose/k8s replicas)


class GatewayConfigError(RuntimeError):
    """``haproxy -c`` rejected a rendered config; the message is HAProxy's output."""


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    address: str
    port: int
    strip_prefix: str = ""
    # Long-lived SSE streams: servers capped at the global maxconn, the stream timeout.
    streams: bool = False


def frontend_maxconn(global_maxconn: int) -> int:
    """The API frontend's share: a quarter stays free so the stats frontend (health checks,
    /metrics) still answers when the API is full; 8000 gives today's 6000."""
    return global_maxconn * 3 // 4


# backend name -> (settings service name, DNS label). DNS labels cannot hold underscores.
_SERVICES: tuple[tuple[str, str, str], ...] = (
    ("users", "users", "users"),
    ("products", "products", "products"),
    ("orders", "orders", "orders"),
    ("payments", "payments", "payments"),
    ("sandbox_pg", "sandbox_pg", "sandbox-pg"),
    ("web", "web", "web"),
)


def _hq(value: object) -> str:
    """Quote a value as one HAProxy config word (double quotes; escapes ``\\``, ``"``, ``$``)."""
    text = str(value)
    if any(c in text for c in "\r\n\0"):
        raise ValueError(f"cannot put a line break in the HAProxy config: {text!r}")
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def _problem(status: int, code: str, title: str, detail: str) -> str:
    """A problem+json body as one single-quoted HAProxy word (no escapes inside quotes)."""
    body = json.dumps(
        {
            "type": f"https://snapshoe.dev/problems/{code.replace('_', '-')}",
            "title": title,
            "status": status,
            "detail": detail,
            "code": code,
        },
        separators=(",", ":"),
    )
    if "'" in body:
        raise ValueError(f"problem body cannot hold a single quote: {body}")
    return f"'{body}'"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("snapshoe.gateway", "templates"),
        undefined=jinja2.StrictUndefined,
        # Not HTML: values are quoted for HAProxy by the `hq` filter instead.
        autoescape=False,  # noqa: S701
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["hq"] = _hq
    env.globals["problem"] = _problem
    return env


def _backends(settings: Settings, target: Target, k8s_namespace: str) -> list[Backend]:
    backends = []
    for name, service, dns in _SERVICES:
        if target == "local":
            # A service bound to the wildcard address is reached on loopback.
            address = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host  # noqa: S104
        elif target == "compose":
            address = dns
        else:
            address = f"{dns}-headless.{k8s_namespace}.svc.cluster.local"
        port = settings.service_port(service)
        strip = "/pg" if name == "sandbox_pg" else ""
        backends.append(Backend(name=name, address=address, port=port, strip_prefix=strip))
        if name == "products":
            # The waiting room's streams: outside the short requests' slots, on the same
            # servers or (locally, SNAPSHOE_PRODUCTS_STREAM_WORKERS) on processes of their own.
            if target == "local" and settings.products_stream_workers:
                port = settings.service_port("products_streams")
            backends.append(Backend("products_streams", address, port, streams=True))
    return backends


def _limits(shared: Settings) -> dict[str, object]:
    """The template's connection, size, timeout and rate limits."""
    settings = settings_for(GatewaySettings, shared)
    return {
        "global_maxconn": settings.gateway_maxconn,
        "frontend_maxconn": frontend_maxconn(settings.gateway_maxconn),
        "server_maxconn": SERVER_MAXCONN,
        "stream_timeout": STREAM_TIMEOUT_SECONDS,
        "template_slots": TEMPLATE_SLOTS,
        "max_body_bytes": MAX_BODY_BYTES,
        "max_header_bytes": MAX_HEADER_BYTES,
        "buffer_bytes": BUFFER_BYTES,
        "rewrite_reserve_bytes": REWRITE_RESERVE_BYTES,
        "request_timeout": settings.gateway_request_timeout_seconds,
        "max_conns_per_client": settings.gateway_max_connections_per_client,
        "login_rate": settings.login_rate_per_minute,
        "verification_rate": settings.verification_rate_per_minute,
        "signup_rate": settings.signup_rate_per_minute,
        "password_reset_rate": settings.password_reset_rate_per_minute,
        "queue_join_rate": settings.queue_join_rate_per_minute,
        "draw_entry_rate": settings.draw_entry_rate_per_minute,
    }


def render_config(
    settings: Settings,
    target: Target = "local",
    *,
    kid: str | None = None,
    k8s_namespace: str = "snapshoe",
) -> str:
    """The haproxy.cfg text for ``target``.

    ``kid`` defaults to the thumbprint of the public key at ``settings.public_key_path`` (the
    file must exist: HAProxy loads it when it parses the config). ``k8s_namespace`` names the
    namespace of the headless services for the ``k8s`` target.
    """
    if target not in ("local", "compose", "k8s"):
        raise ValueError(f"unknown gateway target {target!r}")
    key_path = settings.public_key_path
    if kid is None:
        kid = public_jwk(load_public_key(key_path))["kid"]
    # Locally HAProxy runs from anywhere, so pin the key to an absolute path. In containers
    # the path is the mounted one, as configured.
    public_key = key_path.resolve() if target == "local" else key_path
    bind_host = settings.host if target == "local" else "0.0.0.0"  # noqa: S104
    # The sandbox PG is a development stand-in: a production gateway has no route to it.
    pg_routed = settings.environment != "production"
    return (
        _environment()
        .get_template("haproxy.cfg.j2")
        .render(
            target=target,
            bind_host=bind_host,
            gateway_port=settings.gateway_port,
            stats_port=settings.gateway_stats_port,
            **_limits(settings),
            pg_routed=pg_routed,
            algorithm=settings.jwt_algorithm,
            public_key=public_key,
            kid=kid,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway=settings.jwt_leeway_seconds,
            stripped_headers=STRIPPED_HEADERS,
            edge_token=web_edge_token(settings),
            gateway_errors=GATEWAY_ERRORS,
            backends=[
                b
                for b in _backends(settings, target, k8s_namespace)
                if pg_routed or b.name != "sandbox_pg"
            ],
        )
    )


def write_config(settings: Settings, target: Target = "local") -> Path:
    """Render ``target`` to ``settings.data_dir / "haproxy.cfg"`` and return that path."""
    path = settings.data_dir / "haproxy.cfg"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".cfg.tmp")
    tmp.write_text(render_config(settings, target))
    tmp.replace(path)  # atomic: a running reload never sees half a file
    return path


def haproxy_binary() -> str:
    """HAProxy lives in /usr/sbin on Debian, which is often not on a user's PATH."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise FileNotFoundError("haproxy is not installed (apt-get install haproxy)")
    return found


def haproxy_command(settings: Settings, config_path: Path) -> list[str]:
    """The foreground command: no daemon, no master process, logs on stdout; SIGTERM or
    SIGINT stops it. (``settings`` is accepted for symmetry with the other services.)"""
    del settings
    return [haproxy_binary(), "-db", "-f", str(config_path)]


def check_config(path: Path) -> None:
    """Run ``haproxy -c`` on ``path`` in zero-warning mode (``-dW``: a warning is an error,
    so a silently ignored directive cannot slip through); raise :class:`GatewayConfigError`
    with HAProxy's output when the config is not clean."""
    proc = subprocess.run(  # noqa: S603 (fixed binary, our own file)
        [haproxy_binary(), "-dW", "-c", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:
        raise GatewayConfigError(f"haproxy -c failed for {path}:\n{proc.stdout}{proc.stderr}")
