"""The web tier's own knobs (``WebSettings``): its sessions and how it reaches the gateway. The
shared ones (ports, Redis, the gateway's address) are the kernel's ``Settings``."""

from __future__ import annotations

from pydantic import Field

from snapshoe.kernel.settings import Settings


class WebSettings(Settings):
    """The kernel's shared settings and the web tier's own knobs."""

    # A signed-in session lives as long as its refresh token could (the API's own limit).
    web_session_ttl_seconds: int = Field(default=14 * 24 * 3600, ge=300)
    # Cookies are Secure outside dev and test (where the store is plain http on loopback);
    # set it to force either way.
    web_cookie_secure: bool | None = None
    # Connections to the gateway at once per process: the gateway caps connections per client
    # address at accept (SNAPSHOE_GATEWAY_MAX_CONNECTIONS_PER_CLIENT, 300 by default).
    web_upstream_connections: int = Field(default=100, ge=1, le=1000)
    web_upstream_timeout_seconds: float = Field(default=15.0, gt=0, le=120)
    # Where the web tier calls the API; empty: the gateway of these settings.
    web_api_url: str = ""
    # The PG's payment window the buyer is sent to (Toss's redirect flow); in dev and tests the
    # sandbox PG's, which the gateway routes at /pg (docs/payments-pg.md, "The payment window").
    web_pg_checkout_url: str = "/pg/v1/sandbox/checkout"

    @property
    def cookie_secure(self) -> bool:
        if self.web_cookie_secure is not None:
            return self.web_cookie_secure
        return self.environment == "production"

    @property
    def pg_checkout_path(self) -> str:
        return self.web_pg_checkout_url

    @property
    def api_base(self) -> str:
        return (self.web_api_url or self.gateway_url).rstrip("/")
