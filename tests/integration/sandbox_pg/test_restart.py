"""The sandbox keeps its payments in Redis: a restart forgets nothing a reconciler may ask."""

from __future__ import annotations

import httpx
from tests.integration.sandbox_pg.conftest import order_id
from tests.integration.sandbox_pg.server import SandboxServer, basic, flush_namespace

NAMESPACE = "snapshoe_pgtest_restart"


async def test_payments_survive_a_restart() -> None:
    flush_namespace(NAMESPACE)
    server = SandboxServer(NAMESPACE)
    server.start()
    oid = order_id()
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=basic()) as pg:
            r = await pg.post(
                "/v1/sandbox/authorizations",
                json={"order_id": oid, "amount": 5000, "card_number": "4330123412340009"},
            )
            key = r.json()["payment_key"]
            # The lost-response card: approved, answer lost, then the sandbox restarts.
            try:
                await pg.post(
                    "/v1/payments/confirm",
                    json={"paymentKey": key, "orderId": oid, "amount": 5000},
                    headers={"Idempotency-Key": "restart-1"},
                )
                raise AssertionError("the confirm answer should have been lost")
            except httpx.TransportError:
                pass
            await pg.put("/v1/sandbox/config", json={"latency_ms": 1})
    finally:
        server.stop()
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=basic()) as pg:
            p = (await pg.get(f"/v1/payments/orders/{oid}")).json()
            assert p["status"] == "DONE"
            assert p["paymentKey"] == key
            assert (await pg.get(f"/v1/sandbox/orders/{oid}/charges")).json()["charges"] == 1
            replay = await pg.post(
                "/v1/payments/confirm",
                json={"paymentKey": key, "orderId": oid, "amount": 5000},
                headers={"Idempotency-Key": "restart-1"},
            )
            assert replay.status_code == 200
            assert replay.json()["status"] == "DONE"
            # Knobs set at run time do not: a start begins from the configured defaults, so a
            # benchmark's decline rate never leaks into the next dev session.
            assert (await pg.get("/v1/sandbox/config")).json()["latency_ms"] == 0
    finally:
        server.stop()
        flush_namespace(NAMESPACE)
