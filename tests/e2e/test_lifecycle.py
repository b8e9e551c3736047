"""The order lifecycle through the gateway, on a second platform started with a 2-second stage
and a 4-second payment TTL (its own ports and namespace): a paid order is seen PREPARING, then
SHIPPING, then DELIVERED, its history one stage apart; an unpaid one expires and its pair is back
on the shelf."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from tests.integration.orders.helpers import OrdersEnv, assert_problem, key
from tests.support.platform import (
    ROOT,
    SLOT,
    Platform,
    make_test_settings,
    reset_state,
    start_platform,
    stop_platform_process,
)
from tests.support.waiting import eventually

STAGE = 2.0
TTL = 4.0
POLL = 0.5  # the worker's default poll interval


@pytest.fixture(scope="module")
def short_platform() -> Iterator[Platform]:
    # Below 32768: ports in the kernel's ephemeral range can be taken by outgoing connections.
    base = 26000 + SLOT * 200  # apart from the main test platform, test_cli and other runs
    env = {
        "SNAPSHOE_GATEWAY_PORT": base,
        "SNAPSHOE_USERS_PORT": base + 101,
        "SNAPSHOE_PRODUCTS_PORT": base + 102,
        "SNAPSHOE_ORDERS_PORT": base + 103,
        "SNAPSHOE_PAYMENTS_PORT": base + 104,
        "SNAPSHOE_SANDBOX_PG_PORT": base + 105,
        "SNAPSHOE_PRODUCTS_STREAMS_PORT": base + 106,
        "SNAPSHOE_WEB_PORT": base + 107,
        "SNAPSHOE_MAIL_SINK_SMTP_PORT": base + 26,
        "SNAPSHOE_SMTP_PORT": base + 26,
        "SNAPSHOE_MAIL_SINK_HTTP_PORT": base + 25,
        "SNAPSHOE_GATEWAY_STATS_PORT": base + 150,
        "SNAPSHOE_NAMESPACE": f"snapshoe_lctest{SLOT}",
        "SNAPSHOE_DATA_DIR": ROOT / ".snapshoe" / f"lctest{SLOT}",
        "SNAPSHOE_ORDER_STAGE_SECONDS": STAGE,
        "SNAPSHOE_ORDER_PAYMENT_TTL_SECONDS": TTL,
    }
    overrides = {k: str(v) for k, v in env.items()}
    reset_state(make_test_settings(**{k[9:].lower(): v for k, v in overrides.items()}))
    running = start_platform(overrides)
    try:
        yield running
    finally:
        code = stop_platform_process(running.proc)
        assert code == 0, running.log_path.read_text()[-3000:]


@pytest.fixture(scope="module")
async def env(short_platform: Platform) -> Any:
    e = OrdersEnv(short_platform)
    try:
        yield e
    finally:
        await e.aclose()


async def _pay(c: httpx.AsyncClient, env: OrdersEnv, auth: dict[str, str], order: Any) -> Any:
    r = await c.post(
        "/pg/v1/sandbox/authorizations",
        json={
            "order_id": order["id"],
            "amount": order["total_amount"],
            "card_number": "4111111111110000",
        },
    )
    assert r.status_code == 200, r.text
    return await c.post(
        "/api/payments/confirm",
        json={
            "order_id": order["id"],
            "payment_key": r.json()["payment_key"],
            "amount": order["total_amount"],
        },
        headers={**auth, "Idempotency-Key": key()},
    )


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_paid_order_advances_stage_by_stage_through_the_gateway(env: OrdersEnv) -> None:
    async with env.client() as c:
        _, items = await env.drop(c, [2])
        buyer = env.buyer()
        r = await env.order(c, buyer, [(items[0]["id"], 1)])
        assert r.status_code == 201, r.text
        order = r.json()
        paid = await _pay(c, env, buyer.auth, order)
        assert paid.status_code == 200, paid.text

        seen: list[str] = []
        deadline = time.monotonic() + 4 * STAGE + 10
        while time.monotonic() < deadline:
            g = await c.get(f"/api/orders/{order['id']}", headers=buyer.auth)
            assert g.status_code == 200, g.text
            status = g.json()["status"]
            if not seen or seen[-1] != status:
                seen.append(status)
            if status == "DELIVERED":
                break
            await asyncio.sleep(0.05)
        assert seen[-3:] == ["PREPARING", "SHIPPING", "DELIVERED"], seen
        assert seen[0] in ("PENDING_PAYMENT", "PREPARING")

        detail = g.json()
        history = {h["status"]: _at(h["at"]) for h in detail["history"]}
        assert list(history) == ["PENDING_PAYMENT", "PREPARING", "SHIPPING", "DELIVERED"]
        reasons = [h["reason"] for h in detail["history"]]
        assert reasons[2:] == ["stage_elapsed", "stage_elapsed"]
        # One stage apart, late by at most the poll interval plus a batch's time (1 s of slack
        # for a 2-core CI machine running two platforms). The first stage counts from the PG's
        # approval time, which precedes the PREPARING row by the event's trip through the
        # outbox, RabbitMQ and the consumer.
        approved = _at(paid.json()["approved_at"])
        shipping = (history["SHIPPING"] - approved).total_seconds()
        delivered = (history["DELIVERED"] - history["SHIPPING"]).total_seconds()
        assert history["PREPARING"] < history["SHIPPING"]
        assert STAGE <= shipping <= STAGE + POLL + 1.0, shipping
        assert STAGE <= delivered <= STAGE + POLL + 1.0, delivered

        # The events were published, and the sold pair stays sold.
        async def published() -> list[str]:
            async with env.orders_db.connect() as conn:
                rows = await conn.execute(
                    text(
                        "SELECT routing_key FROM outbox WHERE published_at IS NOT NULL AND "
                        "JSON_VALUE(body, '$.order_id') = :i ORDER BY id"
                    ),
                    {"i": order["id"]},
                )
                return [x[0] for x in rows]

        await eventually(
            published,
            lambda ks: (
                ks == ["order.placed.v1", "order.paid.v1", "order.shipped.v1", "order.delivered.v1"]
            ),
        )
        assert await env.ledger(items[0]["id"]) == {
            "initial": 2,
            "sold": 1,
            "reserved": 0,
            "available": 1,
        }


async def test_unpaid_order_expires_and_its_pair_returns(env: OrdersEnv) -> None:
    async with env.client() as c:
        _, items = await env.drop(c, [1])
        buyer = env.buyer()
        r = await env.order(c, buyer, [(items[0]["id"], 1)])
        assert r.status_code == 201, r.text
        order = r.json()
        other = env.buyer()
        assert_problem(await env.order(c, other, [(items[0]["id"], 1)]), 409, "sold_out")

        async def status() -> str:
            g = await c.get(f"/api/orders/{order['id']}", headers=buyer.auth)
            s: str = g.json()["status"]
            return s

        started = time.monotonic()
        await eventually(status, lambda s: s == "EXPIRED", timeout=TTL + 10)
        assert time.monotonic() - started <= TTL + POLL + 2
        # Too late to pay; and the pair is back for someone else.
        late = await _pay(c, env, buyer.auth, order)
        assert_problem(late, 409, "invalid_state")
        await eventually(
            lambda: env.ledger(items[0]["id"]),
            lambda x: x == {"initial": 1, "sold": 0, "reserved": 0, "available": 1},
        )
        again = await env.order(c, other, [(items[0]["id"], 1)])
        assert again.status_code == 201, again.text
