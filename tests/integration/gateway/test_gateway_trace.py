"""The gateway starts or continues a W3C trace: a well-formed ``traceparent`` from the client is
passed on unchanged, a missing or malformed one is replaced by a new trace (a random trace id
and parent id), and the gateway's log line names the traceparent the service got."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from tests.integration.gateway.conftest import Gateway
from tests.integration.gateway.test_gateway_edge import headers_of

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-01$")
CLIENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_a_wellformed_traceparent_is_continued(gateway: Gateway) -> None:
    async with gateway.client() as client:
        r = await client.get(
            "/api/products", headers={"traceparent": CLIENT, "tracestate": "vendor=1"}
        )
    seen = headers_of(r)
    assert seen["traceparent"] == [CLIENT]
    assert seen["tracestate"] == ["vendor=1"]


@pytest.mark.parametrize(
    "sent",
    [
        None,
        "garbage",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",  # upper case is invalid
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    ],
)
async def test_a_missing_or_malformed_traceparent_starts_a_new_trace(
    gateway: Gateway, sent: str | None
) -> None:
    headers = {} if sent is None else {"traceparent": sent, "tracestate": "vendor=1"}
    async with gateway.client() as client:
        responses = [await client.get("/api/products", headers=headers) for _ in range(20)]
    trace_ids = set()
    for r in responses:
        seen = headers_of(r)
        assert len(seen["traceparent"]) == 1
        match = TRACEPARENT.match(seen["traceparent"][0])
        assert match is not None, seen["traceparent"]
        assert match.group(1) != "0" * 32
        assert "tracestate" not in seen  # a state without its parent means nothing
        trace_ids.add(match.group(1))
    assert len(trace_ids) == 20  # a new trace per request


async def test_the_traceparent_is_in_the_gateway_log_line(gateway: Gateway) -> None:
    async with gateway.client() as client:
        r = await client.get("/api/products/traced")
    sent = headers_of(r)["traceparent"][0]
    deadline = time.monotonic() + 5
    while f"traceparent={sent}" not in gateway.log_path.read_text():
        assert time.monotonic() < deadline, "traceparent not logged"
        await asyncio.sleep(0.05)
    line = next(x for x in gateway.log_path.read_text().splitlines() if sent in x)
    assert r.headers["x-request-id"] in line
