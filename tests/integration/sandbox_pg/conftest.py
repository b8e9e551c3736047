"""Fixtures of the sandbox PG integration tests: one real sandbox server for the module
tests, with a webhook receiver, knobs reset before every test."""

from __future__ import annotations

import secrets
import signal
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from tests.integration.sandbox_pg.server import (
    SandboxServer,
    WebhookReceiver,
    basic,
    flush_namespace,
)

NAMESPACE = "snapshoe_pgtest"


@pytest.fixture(scope="session")
async def webhooks() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture(scope="session")
def sandbox(webhooks: WebhookReceiver) -> Iterator[SandboxServer]:
    flush_namespace(NAMESPACE)
    server = SandboxServer(NAMESPACE, SNAPSHOE_SANDBOX_PG_WEBHOOK_URL=webhooks.url)
    server.start()
    try:
        yield server
    finally:
        code = server.stop()
        # A clean stop: uvicorn shuts down gracefully, then re-raises the SIGTERM it caught.
        assert code in (0, -signal.SIGTERM), f"sandbox_pg exited with {code}:\n{server.log()}"


@pytest.fixture
async def pg(sandbox: SandboxServer) -> AsyncIterator[httpx.AsyncClient]:
    """A raw client of the sandbox with the secret key; knobs back to defaults first."""
    async with httpx.AsyncClient(base_url=sandbox.url, headers=basic(), timeout=10) as client:
        r = await client.delete("/v1/sandbox/config")
        assert r.status_code == 200, r.text
        yield client


def order_id() -> str:
    return "ord_" + secrets.token_urlsafe(12)
