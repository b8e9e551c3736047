"""Service-to-service calls: ``/internal/...`` routes are never routed by the gateway, and
they require the shared ``X-Internal-Token`` (settings ``internal_token``), so reaching a
service port directly is not enough to call them."""

from __future__ import annotations

import hmac

from fastapi import Request

from snapshoe.kernel.errors import Problem
from snapshoe.kernel.settings import Settings

INTERNAL_TOKEN_HEADER = "X-Internal-Token"  # noqa: S105 (a header name)


def internal_headers(settings: Settings) -> dict[str, str]:
    """Headers a client of another service's ``/internal`` API sends."""
    return {INTERNAL_TOKEN_HEADER: settings.internal_token}


async def internal_caller(request: Request) -> None:
    """FastAPI dependency; the app keeps its Settings on ``app.state.settings``."""
    settings: Settings = request.app.state.settings
    given = request.headers.get(INTERNAL_TOKEN_HEADER, "")
    if not hmac.compare_digest(given.encode(), settings.internal_token.encode()):
        raise Problem(403, "forbidden", detail="Internal endpoint")
