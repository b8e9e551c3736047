"""Billing charges with the whole platform: a real order (placed through the gateway as any fcfs
order), a billing key the buyer registered at the sandbox PG through the gateway, the platform's
payments service called on ``/internal`` through ``kernel.clients.payments.PaymentsClient`` (as
the products service's draw worker calls it), and the order moved by the payment events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from tests.integration.orders.helpers import Buyer, OrdersEnv, key
from tests.integration.sandbox_pg.server import basic
from tests.support.platform import Platform
from tests.support.waiting import eventually

from snapshoe.kernel.clients import UpstreamProblem
from snapshoe.kernel.clients.payments import PaymentsClient
from snapshoe.payments.pg import PgStatus, TossPaymentsClient

APPROVE = "4330123412340000"
DECLINE = "4330123412340002"
LOST = "4330123412340009"
PRICE = 129_000


@pytest.fixture(scope="module")
async def env(platform: Platform) -> AsyncIterator[OrdersEnv]:
    e = OrdersEnv(platform)
    try:
        yield e
    finally:
        await e.aclose()


@pytest.fixture
async def client(platform: Platform) -> AsyncIterator[PaymentsClient]:
    c = PaymentsClient(platform.settings)
    try:
        yield c
    finally:
        await c.aclose()


@pytest.fixture
async def pg(platform: Platform) -> AsyncIterator[TossPaymentsClient]:
    async with TossPaymentsClient.from_settings(platform.settings) as c:
        yield c


async def _order(env: OrdersEnv, c: httpx.AsyncClient, buyer: Buyer) -> dict[str, Any]:
    """A normal fcfs order of one pair, PENDING_PAYMENT."""
    _, (item,) = await env.drop(c, [1], price=PRICE)
    r = await env.order(c, buyer, [(item["id"], 1)])
    assert r.status_code == 201, r.text
    order: dict[str, Any] = r.json()
    assert order["status"] == "PENDING_PAYMENT"
    order["item_id"] = item["id"]
    return order


async def _billing_key(c: httpx.AsyncClient, buyer: Buyer, card: str) -> dict[str, Any]:
    """The buyer registers a card at the PG through the gateway (the dev/test route)."""
    r = await c.post(
        "/pg/v1/billing/authorizations/card",
        json={
            "customerKey": buyer.id,
            "cardNumber": card,
            "cardExpirationYear": "30",
            "cardExpirationMonth": "12",
        },
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _charges(platform: Platform, order_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(
        base_url=platform.url("sandbox_pg"), headers=basic(platform.settings.pg_secret_key)
    ) as admin:
        r = await admin.get(f"/v1/sandbox/orders/{order_id}/charges")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def _payment_row(platform: Platform, order_id: str) -> dict[str, Any]:
    engine = create_async_engine(platform.settings.database_url("payments"))
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT * FROM payments WHERE order_id = :o"), {"o": order_id}
                )
            ).one()
        return dict(row._mapping)
    finally:
        await engine.dispose()


async def _status(env: OrdersEnv, order_id: str, status: str) -> dict[str, Any]:
    return await eventually(
        lambda: env.order_row(order_id), lambda r: r["status"] == status, timeout=20
    )


async def test_a_charge_makes_the_order_preparing_and_charges_the_pg_once(
    env: OrdersEnv, platform: Platform, client: PaymentsClient
) -> None:
    async with env.client() as c:
        buyer = env.buyer()
        order = await _order(env, c, buyer)
        issued = await _billing_key(c, buyer, APPROVE)
        card = await client.verify_billing_key(issued["billingKey"], buyer.id)
        assert card.card_number == "43301234****000*"
        assert card.card_fingerprint == issued["card"]["fingerprint"]

        first = await client.charge(order["id"], issued["billingKey"], buyer.id, "Air Max 1")
        assert (first.status, first.order_id, first.pg_code) == ("DONE", order["id"], None)
        row = await _status(env, order["id"], "PREPARING")
        assert row["payment_id"] == first.payment_id
        # Again, one at a time and many at once: the same payment, never a second charge.
        again = await asyncio.gather(
            *(client.charge(order["id"], issued["billingKey"], buyer.id, "x") for _ in range(10))
        )
        assert {(a.payment_id, a.status) for a in again} == {(first.payment_id, "DONE")}
        # Nor can the buyer pay it again through confirm.
        r = await c.post(
            "/api/payments/confirm",
            json={"order_id": order["id"], "payment_key": "pk_x", "amount": PRICE},
            headers={**buyer.auth, "Idempotency-Key": key()},
        )
        assert (r.status_code, r.json()["code"]) == (409, "invalid_state")
    counted = await _charges(platform, order["id"])
    # The order's total, as orders has it: the caller never says an amount.
    assert (counted["charges"], counted["charged_amount"]) == (1, order["total_amount"])
    stored = await _payment_row(platform, order["id"])
    assert (stored["method"], stored["billing_key"]) == ("billing", issued["billingKey"])
    assert stored["payment_key"]  # learned from the PG's answer


async def test_a_declined_charge_fails_the_order_and_puts_the_pair_back(
    env: OrdersEnv, platform: Platform, client: PaymentsClient
) -> None:
    async with env.client() as c:
        buyer = env.buyer()
        order = await _order(env, c, buyer)
        issued = await _billing_key(c, buyer, DECLINE)
        out = await client.charge(order["id"], issued["billingKey"], buyer.id, "Air Max 1")
        assert (out.status, out.pg_code) == ("FAILED", "REJECT_CARD_PAYMENT")
        await _status(env, order["id"], "PAYMENT_FAILED")
        await eventually(
            lambda: env.ledger(order["item_id"]), lambda s: s["available"] == 1, timeout=20
        )
    assert (await _charges(platform, order["id"]))["charges"] == 0


async def test_a_lost_answer_is_unknown_then_reconciled_and_the_order_is_preparing(
    env: OrdersEnv, platform: Platform, client: PaymentsClient, pg: TossPaymentsClient
) -> None:
    async with env.client() as c:
        buyer = env.buyer()
        order = await _order(env, c, buyer)
        issued = await _billing_key(c, buyer, LOST)
        out = await client.charge(order["id"], issued["billingKey"], buyer.id, "Air Max 1")
        assert out.status == "UNKNOWN", out
        assert out.pg_code == "TRANSPORT_ERROR"
        row = await _status(env, order["id"], "PREPARING")
        assert row["payment_id"] == out.payment_id
    # The PG holds exactly one approved payment for the order, and payments knows its key.
    at_pg = await pg.get_by_order_id(order["id"])
    assert at_pg.status is PgStatus.DONE
    assert (await _charges(platform, order["id"]))["charges"] == 1
    assert (await _payment_row(platform, order["id"]))["payment_key"] == at_pg.payment_key
    final = await client.charge(order["id"], issued["billingKey"], buyer.id, "Air Max 1")
    assert (final.payment_id, final.status) == (out.payment_id, "DONE")
    assert (await _charges(platform, order["id"]))["charges"] == 1


async def test_someone_else_s_order_or_card_is_never_charged(
    env: OrdersEnv, platform: Platform, client: PaymentsClient
) -> None:
    async with env.client() as c:
        alice, bob = env.buyer(), env.buyer()
        order = await _order(env, c, alice)
        bobs = await _billing_key(c, bob, APPROVE)
        # Bob's card for Alice's order, as Bob: not his order.
        with pytest.raises(UpstreamProblem) as info:
            await client.charge(order["id"], bobs["billingKey"], bob.id, "x")
        assert (info.value.status, info.value.code) == (404, "not_found")
        assert (await env.order_row(order["id"]))["status"] == "PENDING_PAYMENT"
        # Bob's card, claimed as Alice's: the PG refuses it (nothing charged; the order fails,
        # as any declined charge does).
        with pytest.raises(UpstreamProblem) as info:
            await client.verify_billing_key(bobs["billingKey"], alice.id)
        assert (info.value.status, info.value.code) == (422, "billing_key_invalid")
        out = await client.charge(order["id"], bobs["billingKey"], alice.id, "x")
        assert (out.status, out.pg_code) == ("FAILED", "NOT_MATCHES_CUSTOMER_KEY")
        await _status(env, order["id"], "PAYMENT_FAILED")
    assert (await _charges(platform, order["id"]))["charges"] == 0


async def test_the_gateway_never_routes_internal_paths(env: OrdersEnv) -> None:
    async with env.client() as c:
        for path in (
            "/internal/charges",
            "/internal/billing-keys/verify",
            "/api/payments/../../internal/charges",
            "/pg/v1/billing/x",
        ):
            r = await c.post(path, json={}, headers=env.internal)
            assert r.status_code == 404, (path, r.text)
            assert r.json()["code"] == "not_found"
