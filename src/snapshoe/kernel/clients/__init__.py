"""Typed HTTP clients of other services' ``/internal`` APIs.

One pooled keep-alive ``httpx.AsyncClient`` per client, built in a service's lifespan (never at
import). Timeouts everywhere; retries only for requests that are safe to repeat (GETs, and POSTs
that the callee makes idempotent by an id in the request).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from snapshoe.kernel.internal import internal_headers
from snapshoe.kernel.settings import Settings

log = logging.getLogger("snapshoe.clients")


class UpstreamProblem(Exception):
    """The other service answered with a problem (4xx): a business answer, not an outage."""

    def __init__(self, status: int, code: str, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {code}")
        self.status = status
        self.code = code
        self.body = body


class UpstreamUnavailable(Exception):
    """The other service did not answer usefully (timeout, connection error, 5xx)."""


class InternalClient:
    def __init__(
        self,
        settings: Settings,
        service: str,
        *,
        timeout: float = 3.0,
        retries: int = 2,
        max_connections: int = 200,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retries = retries
        self.http = httpx.AsyncClient(
            base_url=settings.service_url(service),
            headers=internal_headers(settings),
            timeout=httpx.Timeout(timeout, connect=1.0),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=60,
            ),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(
        self, method: str, path: str, *, retry: bool, **kwargs: Any
    ) -> dict[str, Any]:
        attempts = 1 + (self.retries if retry else 0)
        for attempt in range(attempts):
            try:
                response = await self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt + 1 < attempts:
                    await asyncio.sleep(0.05 * 2**attempt)
                    continue
                raise UpstreamUnavailable(f"{method} {path}: {type(exc).__name__}") from exc
            if response.status_code >= 500:
                if attempt + 1 < attempts:
                    await asyncio.sleep(0.05 * 2**attempt)
                    continue
                raise UpstreamUnavailable(f"{method} {path}: {response.status_code}")
            body: dict[str, Any] = response.json() if response.content else {}
            if response.status_code >= 400:
                raise UpstreamProblem(response.status_code, str(body.get("code", "")), body)
            return body
        raise AssertionError("unreachable")
