"""The HAProxy gateway: its config template and the render step.

The template lives inside the package so an installed wheel can render it. One template serves
three targets: ``local`` (services on 127.0.0.1 ports), ``compose`` (Docker DNS) and ``k8s``
(headless services). See docs/gateway.md.
"""

from snapshoe.gateway.render import (
    GatewayConfigError,
    Target,
    check_config,
    haproxy_binary,
    haproxy_command,
    render_config,
    write_config,
)

__all__ = [
    "GatewayConfigError",
    "Target",
    "check_config",
    "haproxy_binary",
    "haproxy_command",
    "render_config",
    "write_config",
]
