"""The benchmarks' HTTP client: a small adapter over the project's aiohttp session
(``kernel.clients.pooled_session``), shaped like the calls the bench makes.

``async with Client(base_url, timeout=60) as client:`` then ``r = await client.post(path,
json=..., headers=...)``; ``r`` is a :class:`Response` read in full before the call returns
(``r.status``, ``r.json()``, ``r.text``, ``r.headers``, ``r.raise_for_status()``), so a caller
needs no ``async with`` per request and can keep the answer after the connection went back to
the pool. The session is made on entering (inside the running loop, as aiohttp requires) and
closed on leaving. Redirects are not followed (the answer is what the server said).

The errors are aiohttp's: :data:`HTTP_ERRORS` is anything a request can fail with (an error
status from ``raise_for_status`` included), :data:`TRANSPORT_ERRORS` the connection-level
failures (no answer at all).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from snapshoe.kernel.clients import pooled_session

# No answer: the connection failed, was cut or timed out (httpx's TransportError).
TRANSPORT_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)
# Any failure of a request, an error status raised by ``raise_for_status`` too (httpx's
# HTTPError).
HTTP_ERRORS = (aiohttp.ClientError, TimeoutError)
DEFAULT_MAX_CONNECTIONS = 100  # httpx's default pool, which the bench used before


def timeout_of(seconds: float) -> aiohttp.ClientTimeout:
    """``seconds`` for each step (a pooled connection, connecting, each read), no total:
    what httpx's ``timeout=seconds`` meant."""
    return aiohttp.ClientTimeout(
        total=None, connect=seconds, sock_connect=seconds, sock_read=seconds
    )


@dataclass(frozen=True)
class Response:
    """An answer, read in full."""

    status: int
    content: bytes
    headers: CIMultiDictProxy[str]
    url: str
    request_info: aiohttp.RequestInfo

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return orjson.loads(self.content)

    def raise_for_status(self) -> None:
        """Raise unless the status is 2xx (as httpx did: a redirect, not followed, too)."""
        if not 200 <= self.status < 300:
            raise aiohttp.ClientResponseError(
                self.request_info,
                (),
                status=self.status,
                message=f"{self.status} for {self.url}: {self.text[:200]}",
                headers=self.headers,
            )


class Client:
    """One keep-alive pool of ``max_connections`` to ``base_url`` (a path given to a request
    is appended to it; an absolute URL is used as it is)."""

    def __init__(
        self,
        base_url: str = "",
        *,
        timeout: float,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout_of(timeout)
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        self._session = pooled_session(self.max_connections, timeout=self.timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, path: str) -> str:
        return path if "://" in path else f"{self.base_url}{path}"

    async def request(self, method: str, path: str, **kw: Any) -> Response:
        """``kw``: aiohttp's (``json``, ``params``, ``headers``, ``timeout``)."""
        if self._session is None:
            raise RuntimeError("use the client as `async with Client(...) as client:`")
        async with self._session.request(method, self.url(path), allow_redirects=False, **kw) as r:
            content = await r.read()
            return Response(r.status, content, r.headers, str(r.url), r.request_info)

    async def get(self, path: str, **kw: Any) -> Response:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> Response:
        return await self.request("POST", path, **kw)

    async def patch(self, path: str, **kw: Any) -> Response:
        return await self.request("PATCH", path, **kw)


async def fetch(method: str, url: str, *, seconds: float, **kw: Any) -> Response:
    """One request on a session of its own, ``seconds`` per step (see :func:`timeout_of`)."""
    async with Client(timeout=seconds, max_connections=1) as client:
        return await client.request(method, url, **kw)


def fetch_sync(method: str, url: str, *, seconds: float, **kw: Any) -> Response:
    """:func:`fetch` from synchronous code (no running loop), on a loop of its own."""
    return asyncio.run(fetch(method, url, seconds=seconds, **kw))
