"""The internal HTTP client over real sockets: what it retries and what it never repeats."""

from __future__ import annotations

import asyncio
import socket

import orjson
import pytest
from tests.support.platform import make_test_settings

from snapshoe.kernel.clients import CONNECT_RETRIES, InternalClient, UpstreamUnavailable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Upstream:
    """A minimal HTTP/1.1 server that counts the requests it receives."""

    def __init__(self, port: int, status: int = 201) -> None:
        self.port = port
        self.status = status
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        self.requests += 1
        body = orjson.dumps({"n": self.requests})
        writer.write(
            b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (self.status, len(body), body)
        )
        await writer.drain()
        writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def _client(port: int) -> InternalClient:
    settings = make_test_settings().model_copy(update={"products_url": f"http://127.0.0.1:{port}"})
    return InternalClient(settings, "products")


async def test_a_request_never_sent_is_tried_again_even_when_not_retried() -> None:
    """Connection refused (the service accepts late): the POST was never sent, so it is safe
    to send it again, once, even with retry=False."""
    port = _free_port()
    upstream = Upstream(port)
    client = _client(port)

    async def start_late() -> None:
        await asyncio.sleep(0.12)  # after the first connect attempt was refused
        await upstream.start()

    try:
        late = asyncio.create_task(start_late())
        body = await client.request("POST", "/internal/reservations", retry=False, json={})
        await late
        assert body == {"n": 1}
        assert upstream.requests == 1
    finally:
        await client.aclose()
        await upstream.stop()


async def test_connect_retries_are_bounded() -> None:
    """Nothing ever listens: the client tries CONNECT_RETRIES more connects (its backoff
    sleeps 0.1 + 0.2 + 0.4 s between them), then reports the service unavailable."""
    client = _client(_free_port())
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(UpstreamUnavailable, match="ClientConnectorError"):
            await client.request("POST", "/internal/reservations", retry=False, json={})
    finally:
        await client.aclose()
    elapsed = loop.time() - started
    backoff = sum(0.05 * 2**n for n in range(1, CONNECT_RETRIES + 1))
    assert backoff <= elapsed < backoff + 3.0, elapsed


async def test_a_sent_request_that_fails_is_not_repeated_unless_retried() -> None:
    """A 5xx after the request arrived: with retry=False it is sent exactly once (the other
    side may have acted on it); with retry=True it is repeated."""
    port = _free_port()
    upstream = Upstream(port, status=503)
    await upstream.start()
    client = _client(port)
    try:
        with pytest.raises(UpstreamUnavailable, match="503"):
            await client.request("POST", "/internal/reservations", retry=False, json={})
        assert upstream.requests == 1
        with pytest.raises(UpstreamUnavailable, match="503"):
            await client.request("GET", "/internal/items", retry=True)
        assert upstream.requests == 1 + 1 + client.retries
    finally:
        await client.aclose()
        await upstream.stop()
