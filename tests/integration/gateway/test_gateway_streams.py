"""The waiting room's ticket streams at the real gateway: a backend of their own
(``products_streams``), behind every check of the frontend, outside the short requests'
per-server cap, and with an idle timeout fitted to heartbeats rather than to requests.

The echo upstream (``conftest.py``) serves the stream path as SSE: the echo of the request as
its first event, then heartbeats ``gap`` seconds apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tests.integration.gateway.conftest import (
    Gateway,
    fresh_address,
    gateway_test_settings,
    run_haproxy,
)
from tests.integration.gateway.test_gateway_bounds import client, log_line

from snapshoe.gateway import render
from snapshoe.kernel.auth import TokenIssuer, load_private_key

EVENTS = "/api/products/P1/queue/me/events"


async def first_event(lines: AsyncIterator[str]) -> dict[str, object]:
    """The echo a stream opens with. The caller keeps ``lines``: an iterator of a response
    that is collected closes its connection, which would end the stream."""
    async with asyncio.timeout(5):
        async for line in lines:
            if line.startswith("data: "):
                return dict(json.loads(line.removeprefix("data: ")))
    raise AssertionError("the stream ended before its first event")


async def test_the_ticket_stream_has_its_own_backend_behind_every_check(gateway: Gateway) -> None:
    async with gateway.client() as c:
        refused = await c.get(EVENTS)
        assert refused.status_code == 401, refused.text
        assert refused.json()["code"] == "unauthorized"
        headers = {"Authorization": f"Bearer {gateway.token()}", "X-User-Id": "admin"}
        async with c.stream("GET", EVENTS, headers=headers) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            seen = await first_event(lines)
            rid = stream.headers["x-request-id"]
        sent = {k.lower(): v for k, v in seen["headers"]}  # type: ignore[union-attr]
        # The frontend's rules applied: identity header stripped, request id set.
        assert "x-user-id" not in sent
        assert sent["x-request-id"] == rid
        assert seen["path"] == EVENTS
        short = await c.get(
            "/api/products/P1/queue/me", headers={"Authorization": headers["Authorization"]}
        )
        assert short.status_code == 200
    # HAProxy logs a stream when it ends ("%b/%s": backend/server), which it sees at the next
    # heartbeat: the echo upstream shares this loop, so the log is waited for in a thread.
    line = await asyncio.to_thread(log_line, gateway.log_path, rid)
    assert " products_streams/products_streams " in line
    assert " products/products " in log_line(gateway.log_path, short.headers["x-request-id"])


async def test_streams_neither_queue_behind_nor_take_the_short_requests_slots(
    gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With two slots per server for short requests, six streams are all served at once, and a
    short request is still answered at once beside them (on one backend the third stream would
    wait in HAProxy's queue, then get 503 after `timeout queue`, and so would the request)."""
    monkeypatch.setattr(render, "SERVER_MAXCONN", 2)
    settings = gateway_test_settings(tmp_path / "gw", gateway.settings.users_port)
    issuer = TokenIssuer(load_private_key(settings.private_key_path), settings)
    auth = {"Authorization": f"Bearer {issuer.issue_access('user-1', email_verified=True)[0]}"}
    with run_haproxy(settings):
        async with contextlib.AsyncExitStack() as held, client(settings, fresh_address()) as c:
            assert "maxconn 2\n" in settings.data_dir.joinpath("haproxy.cfg").read_text()
            streams = []
            for _ in range(6):
                stream = await held.enter_async_context(c.stream("GET", EVENTS, headers=auth))
                assert stream.status_code == 200
                streams.append(stream.aiter_lines())
                assert (await first_event(streams[-1]))["path"] == EVENTS
            started = time.monotonic()
            short = await asyncio.gather(*(c.get("/api/products") for _ in range(2)))
            assert [r.status_code for r in short] == [200, 200]
            assert time.monotonic() - started < 2


@pytest.mark.slow
async def test_a_stream_outlives_the_idle_timeout_of_short_requests(gateway: Gateway) -> None:
    """32 s between two frames: the short requests' `timeout server` (30 s) cuts a response
    that silent, the streams' (45 s, three of the services' 15 s heartbeats) does not."""
    auth = {"Authorization": f"Bearer {gateway.token()}"}

    async def frames_within(path: str, seconds: float) -> int:
        async with gateway.client() as c:
            c.timeout = httpx.Timeout(60)
            async with c.stream("GET", f"{path}?gap=32", headers=auth) as stream:
                assert stream.status_code == 200
                frames = 0
                with contextlib.suppress(TimeoutError, httpx.RemoteProtocolError):
                    async with asyncio.timeout(seconds):
                        async for line in stream.aiter_lines():
                            frames += line.startswith(("data:", ": heartbeat"))
                return frames

    # The trailing slash is not the stream route: it reaches products' own backend.
    streamed, cut = await asyncio.gather(frames_within(EVENTS, 34), frames_within(EVENTS + "/", 34))
    assert streamed == 2  # the first event and the heartbeat 32 s later
    assert cut == 1  # closed by the gateway at 30 s, before the heartbeat
