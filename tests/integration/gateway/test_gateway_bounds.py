"""The real HAProxy gateway's request bounds (issue 12, items 8 and 15): the whole request is
timed and size-checked at the edge, one address cannot hold unlimited connections, HAProxy's
own errors are problem+json, and a request that may have reached a service is never re-sent.

Most tests start a gateway of their own (short timeouts, a small cap, a misbehaving backend);
they reuse the rendered config and the helpers of ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.gateway.conftest import (
    Gateway,
    free_port,
    fresh_address,
    gateway_test_settings,
    run_haproxy,
)

from snapshoe.bench.probe import cap_problem, connections_kept
from snapshoe.kernel.settings import Settings


def assert_problem(status: int, code: str, head: bytes, body: bytes) -> None:
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
    assert b"\r\ncontent-type: application/problem+json\r\n" in head.lower(), head
    problem = json.loads(body)
    assert problem["status"] == status
    assert problem["code"] == code
    assert problem["title"]
    assert problem["detail"]


async def read_response(reader: asyncio.StreamReader, timeout: float) -> tuple[bytes, bytes]:
    """One HTTP/1.1 response with a Content-Length (HAProxy's own answers have one)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    length = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
    assert length, head
    body = await asyncio.wait_for(reader.readexactly(int(length.group(1))), timeout)
    return head, body


@contextlib.contextmanager
def own_gateway(
    tmp_path: Path, upstream: int, ports: dict[str, int] | None = None, **overrides: Any
) -> Iterator[Settings]:
    """A gateway of its own; ``ports`` points some services elsewhere than ``upstream``."""
    settings = gateway_test_settings(tmp_path / "gw", upstream, **overrides)
    settings = settings.model_copy(update=ports or {})
    with run_haproxy(settings):
        yield settings


def client(settings: Settings, ip: str) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=ip, retries=0)
    return httpx.AsyncClient(
        transport=transport, base_url=f"http://127.0.0.1:{settings.gateway_port}", timeout=10
    )


def log_line(log_path: Path, request_id: str) -> str:
    deadline = time.monotonic() + 5
    while True:
        for line in log_path.read_text().splitlines():
            if f"request_id={request_id}" in line:
                return line
        assert time.monotonic() < deadline, f"no log line for {request_id}"
        time.sleep(0.05)


# Item 8: HAProxy's own errors, header and body size


async def test_a_16_kb_header_gets_problem_json(gateway: Gateway) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", gateway.settings.gateway_port, local_addr=(fresh_address(), 0)
    )
    writer.write(
        b"GET /api/products HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * 16 * 1024 + b"\r\n\r\n"
    )
    await writer.drain()
    head, body = await read_response(reader, 5)
    writer.close()
    assert_problem(431, "request_header_fields_too_large", head, body)
    async with gateway.client() as ok:
        r = await ok.get("/api/products", headers={"X-Big": "a" * 4096})
    assert r.status_code == 200, r.text


async def test_malformed_request_is_answered_by_the_gateway(gateway: Gateway) -> None:
    """HAProxy 2.6's parser answers a request it cannot parse itself (a fixed HTML page: that
    answer cannot be customised in 2.6); it never reaches a service."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", gateway.settings.gateway_port, local_addr=(fresh_address(), 0)
    )
    writer.write(b"GET /api/products HTTP/1.1\r\nHost: gw\r\nBad Header\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    assert head.startswith(b"HTTP/1.1 400 "), head


async def chunks(total: int, size: int = 4096) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b"x" * n


async def test_a_chunked_body_over_64_kib_is_413(gateway: Gateway) -> None:
    async with gateway.client() as c:
        big = await c.post("/api/products", content=chunks(64 * 1024 + 1))
        assert big.status_code == 413, big.text
        assert big.headers["content-type"] == "application/problem+json"
        assert big.json()["code"] == "payload_too_large"
        # httpx sends a generator chunked: the largest accepted body still gets through whole.
        ok = await c.post("/api/products", content=chunks(64 * 1024))
    assert ok.status_code == 200, ok.text
    assert ok.json()["body_bytes"] == 64 * 1024


# Item 8: the whole request is bounded in time


# With Expect: 100-continue HAProxy answers 100 itself and still waits for the body.
@pytest.mark.parametrize("expect", [b"", b"Expect: 100-continue\r\n"], ids=["plain", "expect"])
async def test_a_slow_body_is_cut_off_with_408(
    gateway: Gateway, tmp_path: Path, expect: bytes
) -> None:
    timeout = 2
    with own_gateway(
        tmp_path, gateway.settings.users_port, gateway_request_timeout_seconds=timeout
    ) as settings:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", settings.gateway_port, local_addr=(fresh_address(), 0)
        )
        writer.write(
            b"POST /api/auth/login HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            b"Content-Length: 40\r\n%s\r\n" % expect
        )
        await writer.drain()
        started = time.monotonic()
        if expect:
            assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == (
                b"HTTP/1.1 100 Continue\r\n\r\n"
            )

        async def trickle() -> None:
            # One byte a second: never idle long enough for `timeout client` (30 s).
            with contextlib.suppress(ConnectionError):
                for _ in range(40):
                    writer.write(b" ")
                    await writer.drain()
                    await asyncio.sleep(1)

        sender = asyncio.create_task(trickle())
        try:
            head, body = await read_response(reader, timeout + 4)
        finally:
            sender.cancel()
            writer.close()
        elapsed = time.monotonic() - started
        assert_problem(408, "request_timeout", head, body)
        assert elapsed < timeout + 2, elapsed
        # The service never saw it: HAProxy's log shows no server for that request.
        rid = re.search(rb"x-request-id: *([0-9a-f-]+)", head, re.IGNORECASE)
        assert rid, head
        line = log_line(settings.data_dir / "haproxy.log", rid.group(1).decode())
        assert "<NOSRV>" in line, line
        # A body sent at once still goes through on the same gateway.
        async with client(settings, fresh_address()) as c:
            r = await c.post("/api/auth/login", json={"email": "a@b.c", "password": "x"})
        assert r.status_code == 200, r.text
        assert r.json()["path"] == "/api/auth/login"


# Item 8: connections per client address


async def test_connections_beyond_the_per_address_cap_are_refused(
    gateway: Gateway, tmp_path: Path
) -> None:
    cap = 5
    with own_gateway(
        tmp_path, gateway.settings.users_port, gateway_max_connections_per_client=cap
    ) as settings:
        flooder, other = fresh_address(), fresh_address()
        held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        request = b"GET /api/products HTTP/1.1\r\nHost: gw\r\n\r\n"
        try:
            # `cap` keep-alive connections, each proven live by an answered request.
            for _ in range(cap):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", settings.gateway_port, local_addr=(flooder, 0)
                )
                writer.write(request)
                await writer.drain()
                head, _ = await read_response(reader, 5)
                assert head.startswith(b"HTTP/1.1 200 "), head
                held.append((reader, writer))
            # Many more from the same address: each is reset at accept (the connect itself may
            # fail) or closed unanswered.
            refused = 0
            for _ in range(20):
                try:
                    reader, writer = await asyncio.open_connection(
                        "127.0.0.1", settings.gateway_port, local_addr=(flooder, 0)
                    )
                except ConnectionError:
                    refused += 1
                    continue
                try:
                    writer.write(request)
                    await writer.drain()
                    data = await asyncio.wait_for(reader.read(1024), 5)
                except ConnectionError:
                    data = b""
                refused += data == b""
                writer.close()
            assert refused == 20
            # Another address is not affected.
            async with client(settings, other) as c:
                assert (await c.get("/api/products")).status_code == 200
        finally:
            for _, writer in held:
                writer.close()
        # Once the flooder's connections are closed, it is served again.
        await asyncio.sleep(0.5)
        async with client(settings, flooder) as c:
            assert (await c.get("/api/products")).status_code == 200


async def test_the_drop_bench_sees_the_cap_before_its_stampede(
    gateway: Gateway, tmp_path: Path
) -> None:
    # wrk drives a drop from one address: the bench asks the gateway how many it keeps.
    cap = 6
    with own_gateway(
        tmp_path, gateway.settings.users_port, gateway_max_connections_per_client=cap
    ) as settings:
        url = settings.gateway_url
        assert await connections_kept(url, cap + 10) == cap
        problem = cap_problem(url, cap, cap + 10)
        assert problem is not None
        assert f"SNAPSHOE_GATEWAY_MAX_CONNECTIONS_PER_CLIENT={cap + 10}" in problem
        # Its own connections are closed again: as many as the cap are kept on the next try.
        await asyncio.sleep(0.5)
        assert await connections_kept(url, cap) == cap
        assert cap_problem(url, cap, cap) is None


# Item 15: never re-send what may have reached a service


class DyingService:
    """A backend that reads a whole request, counts it, and closes without answering: a
    service that died after acting on the request."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
            if length:
                await reader.readexactly(int(length.group(1)))
            self.requests.append(head.split(b"\r\n", 1)[0])
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_a_post_that_reached_a_dying_service_is_sent_once(
    gateway: Gateway, tmp_path: Path
) -> None:
    dying = DyingService()
    server = await asyncio.start_server(dying.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with own_gateway(
            tmp_path, gateway.settings.users_port, ports={"users_port": port}
        ) as settings:
            # One write, as a client sends a small POST: the body is at the gateway when it
            # connects, so HAProxy could replay the request from its buffer.
            body = b'{"refresh_token":"t"}'
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", settings.gateway_port, local_addr=(fresh_address(), 0)
            )
            writer.write(
                b"POST /api/auth/refresh HTTP/1.1\r\nHost: gw\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            await writer.drain()
            head, answer = await read_response(reader, 10)
            writer.close()
            assert_problem(502, "bad_gateway", head, answer)
            await asyncio.sleep(0.2)
            assert dying.requests == [b"POST /api/auth/refresh HTTP/1.1"]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_refused_connection_is_still_retried(gateway: Gateway, tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there: every connect is refused
    with own_gateway(
        tmp_path, gateway.settings.users_port, ports={"products_port": closed}
    ) as settings:
        async with client(settings, fresh_address()) as c:
            r = await c.post("/api/products", json={})
            # The other services are reached as usual.
            assert (await c.post("/api/auth/login", json={})).status_code == 200
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "service_unavailable"
        line = log_line(settings.data_dir / "haproxy.log", r.headers["x-request-id"])
        # "%ac/%fc/%bc/%sc/%rc": the last field counts the retries (a "+" marks a redispatch).
        retries = re.search(r" \d+/\d+/\d+/\d+/\+?(\d+) \d+/\d+ ", line)
        assert retries, line
        assert retries.group(1) == "2", line
