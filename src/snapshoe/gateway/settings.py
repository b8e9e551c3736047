"""The gateway's own settings (same ``SNAPSHOE_`` names as ever): its rate limits and request
bounds, which HAProxy's rendered configuration carries. Its ports are shared (every part
reaches the gateway), so they are in the kernel's ``Settings``."""

from __future__ import annotations

from pydantic import Field

from snapshoe.kernel.settings import Settings

# Two fds per proxied connection, plus listeners, checks and resolvers, under the 20,000 fds
# one process may open on this machine.
MAX_GATEWAY_MAXCONN = 9500


class GatewaySettings(Settings):
    """The kernel's shared settings and the gateway's own knobs."""

    # Gateway rate limits (per client IP)
    login_rate_per_minute: int = 20
    verification_rate_per_minute: int = 20
    # Each sign-up costs an argon2 hash and a mail.
    signup_rate_per_minute: int = Field(default=10, ge=1)
    # POST /api/auth/password-reset and /confirm together (mails sent, codes tried).
    password_reset_rate_per_minute: int = Field(default=10, ge=1)
    # POST /api/products/{id}/queue: each join is one account's ticket, so many from one
    # address is an account farm; a carrier's shared address holds many buyers, hence not 1.
    queue_join_rate_per_minute: int = Field(default=60, ge=1)
    # POST /api/products/{id}/entries: each entry is one account's and one card's, so the same
    # reasoning (an account or card farm behind one address).
    draw_entry_rate_per_minute: int = Field(default=60, ge=1)

    # Gateway request bounds. The headers must arrive within this many seconds, then the body
    # within as many again (HAProxy buffers it before any service sees it); beyond, 408.
    gateway_request_timeout_seconds: int = Field(default=10, ge=1, le=120)
    # Open connections one client address may hold at the gateway; more are refused at accept
    # (before any HTTP is read), so one address cannot take the frontend's maxconn. Raisable to
    # the largest maxconn, for a benchmark that holds a crowd of streams from one address.
    gateway_max_connections_per_client: int = Field(default=300, ge=1, le=MAX_GATEWAY_MAXCONN)

    # Connections one HAProxy process holds (its global maxconn; the API frontend takes 3/4).
    # A proxied connection costs about two file descriptors, and a process may open 20,000 here.
    gateway_maxconn: int = Field(default=8000, ge=100, le=MAX_GATEWAY_MAXCONN)
    # HAProxy processes `snapshoe up` starts on the gateway port (SO_REUSEPORT: the kernel
    # spreads connections); each has its own fds, maxconn and per-address stick tables.
    gateway_processes: int = Field(default=1, ge=1, le=8)
