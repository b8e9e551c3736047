"""The public API as the web tier calls it: through the gateway, as a buyer's own client would
(no private route into a service), with the buyer's token and address. aiohttp, as the
services' own clients (kernel/clients): one pooled session per process, built in the lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from snapshoe.kernel.internal import CLIENT_IP_HEADER, EDGE_HEADER, web_edge_token
from snapshoe.web.settings import WebSettings

log = logging.getLogger("snapshoe.web")


@dataclass(frozen=True, slots=True)
class Answer:
    """One API answer: its status, its JSON body (a problem's too), its Retry-After."""

    status: int
    body: Any
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def code(self) -> str:
        """The problem's stable code; ``unavailable`` when there was no usable answer."""
        if isinstance(self.body, dict) and isinstance(self.body.get("code"), str):
            return str(self.body["code"])
        return "unavailable" if self.status >= 500 or self.status == 0 else f"http_{self.status}"


class Api:
    def __init__(self, settings: WebSettings) -> None:
        self.base = settings.api_base
        self._edge = web_edge_token(settings)
        self._limit = settings.web_upstream_connections
        self._timeout = aiohttp.ClientTimeout(total=settings.web_upstream_timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=60)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _headers(
        self, token: str | None, client_ip: str | None, extra: Mapping[str, str]
    ) -> dict[str, str]:
        headers = {EDGE_HEADER: self._edge, **extra}
        if client_ip:
            headers[CLIENT_IP_HEADER] = client_ip
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        client_ip: str | None = None,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """One request; a network failure or timeout is an Answer with status 0 (the page says
        the shop cannot be reached), never an exception a page would show as a 500."""
        assert self._session is not None, "Api.start() not called"
        data = orjson.dumps(json) if json is not None else None
        hdrs = self._headers(token, client_ip, headers or {})
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        try:
            async with self._session.request(
                method, self.base + path, data=data, params=params, headers=hdrs
            ) as r:
                raw = await r.read()
                body = orjson.loads(raw) if raw and "json" in r.content_type else None
                return Answer(r.status, body, r.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            log.warning("API %s %s failed: %s", method, path, exc)
            return Answer(0, None)

    async def fetch_json(self, url: str) -> Answer:
        """A GET of a full URL (a service's own ``/openapi.json``), no token, no edge headers."""
        assert self._session is not None, "Api.start() not called"
        try:
            async with self._session.get(url) as r:
                raw = await r.read()
                body = orjson.loads(raw) if raw and "json" in r.content_type else None
                return Answer(r.status, body)
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            log.warning("GET %s failed: %s", url, exc)
            return Answer(0, None)

    @asynccontextmanager
    async def stream(
        self, path: str, *, token: str, client_ip: str | None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """An event stream of the API, held open (no total timeout: it lasts the wait)."""
        assert self._session is not None, "Api.start() not called"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60)
        async with self._session.get(
            self.base + path,
            headers=self._headers(token, client_ip, {"Accept": "text/event-stream"}),
            timeout=timeout,
        ) as r:
            yield r
