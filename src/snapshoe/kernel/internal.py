"""Service-to-service calls: ``/internal/...`` routes are never routed by the gateway, and
they require the shared ``X-Internal-Token`` (settings ``internal_token``), so reaching a
service port directly is not enough to call them."""

from __future__ import annotations

import hmac

from fastapi import Request

from snapshoe.kernel.errors import Problem
from snapshoe.kernel.settings import Settings

INTERNAL_TOKEN_HEADER = "X-Internal-Token"  # noqa: S105 (a header name)
# The store (snapshoe.web) calls the public API through the gateway for its buyers and names
# each buyer's address in CLIENT_IP_HEADER; the gateway believes it only beside EDGE_HEADER
# carrying web_edge_token, so per-address limits count the buyer, never the web tier, and
# nobody else can choose the address they are counted as (docs/web.md).
EDGE_HEADER = "X-SnapShoe-Edge"
CLIENT_IP_HEADER = "X-SnapShoe-Client-Ip"


def web_edge_token(settings: Settings) -> str:
    """The web tier's proof to the gateway, derived from the services' shared secret (so a
    deployment sets no new one, and a production start already refuses the dev default)."""
    return hmac.new(settings.internal_token.encode(), b"snapshoe web edge", "sha256").hexdigest()


def internal_headers(settings: Settings) -> dict[str, str]:
    """Headers a client of another service's ``/internal`` API sends."""
    return {INTERNAL_TOKEN_HEADER: settings.internal_token}


async def internal_caller(request: Request) -> None:
    """FastAPI dependency; the app keeps its Settings on ``app.state.settings``."""
    settings: Settings = request.app.state.settings
    given = request.headers.get(INTERNAL_TOKEN_HEADER, "")
    if not hmac.compare_digest(given.encode(), settings.internal_token.encode()):
        raise Problem(403, "forbidden", detail="Internal endpoint")
