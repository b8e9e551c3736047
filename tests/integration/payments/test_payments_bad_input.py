"""Bad input to the payments API, through the gateway to the real payments service:
problem+json 4xx with a stable code, never a 500, and nothing stored."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from sqlalchemy import func, select
from tests.integration.payments.conftest import Payments
from tests.support.platform import Platform, User

from snapshoe.kernel.db import create_engine
from snapshoe.payments.tables import payments as payments_table

GOOD: dict[str, Any] = {
    "order_id": "ord" + secrets.token_urlsafe(16),
    "payment_key": "tgen_" + secrets.token_hex(10),
    "amount": 10_000,
}

BAD_BODIES: list[Any] = [
    {},
    [],
    "x",
    None,
    {**GOOD, "amount": "10000"},
    {**GOOD, "amount": 10_000.5},
    {**GOOD, "amount": True},
    {**GOOD, "amount": 0},
    {**GOOD, "amount": -5},
    {**GOOD, "amount": 10**12},
    {**GOOD, "amount": None},
    {**GOOD, "order_id": "short"},
    {**GOOD, "order_id": "../../internal/x"},
    {**GOOD, "order_id": "a" * 65},
    {**GOOD, "order_id": 12345678},
    {**GOOD, "payment_key": ""},
    {**GOOD, "payment_key": "k" * 201},
    {**GOOD, "payment_key": "키" * 10},
    {**GOOD, "payment_key": "with space"},
    {"order_id": GOOD["order_id"], "amount": 10_000},
]


async def _count(platform: Platform) -> int:
    """Payments in the platform's own database (the service behind the gateway)."""
    engine = create_engine(platform.settings, "payments", pool_size=1)
    try:
        async with engine.connect() as conn:
            n = (await conn.execute(select(func.count()).select_from(payments_table))).scalar()
    finally:
        await engine.dispose()
    return int(n or 0)


@pytest.fixture
async def before(platform: Platform) -> int:
    return await _count(platform)


async def test_bad_confirm_bodies_are_422(payments: Payments, buyer: User, before: int) -> None:
    async with payments.platform.client() as client:
        for body in BAD_BODIES:
            r = await client.post(
                "/api/payments/confirm",
                json=body,
                headers={**buyer.auth, "Idempotency-Key": secrets.token_hex(8)},
            )
            assert r.status_code == 422, (body, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["code"] == "validation_error"
    assert await _count(payments.platform) == before


async def test_malformed_requests(payments: Payments, buyer: User, before: int) -> None:
    async with payments.platform.client() as client:
        url = "/api/payments/confirm"
        r = await client.post(
            url,
            content=b'{"order_id": ',
            headers={**buyer.auth, "Idempotency-Key": "k1", "Content-Type": "application/json"},
        )
        assert (r.status_code, r.json()["code"]) == (400, "invalid_json")
        r = await client.post(url, json=GOOD, headers=buyer.auth)
        assert (r.status_code, r.json()["code"]) == (400, "idempotency_key_missing")
        r = await client.post(url, json=GOOD, headers={**buyer.auth, "Idempotency-Key": "x" * 300})
        assert (r.status_code, r.json()["code"]) == (400, "idempotency_key_invalid")
        r = await client.post(url, json=GOOD, headers={"Idempotency-Key": "k2"})
        assert r.status_code == 401
        r = await client.post(
            url,
            content=b'{"pad": "' + b"x" * 70_000 + b'"}',
            headers={**buyer.auth, "Idempotency-Key": "k3", "Content-Type": "application/json"},
        )
        assert r.status_code == 413
        for path in ("x" * 100, "%00", "pay_%2F..%2F", "null"):
            r = await client.get(f"/api/payments/{path}", headers=buyer.auth)
            assert r.status_code in (400, 404), (path, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
        r = await client.get("/api/payments/pay_x")
        assert r.status_code == 401
    assert await _count(payments.platform) == before


async def test_bad_webhooks_through_the_gateway(payments: Payments, before: int) -> None:
    async with payments.platform.client() as client:
        for raw in (b"", b"{", b"[]", b'{"eventType": "PAYMENT_STATUS_CHANGED"}', b"\x00"):
            r = await client.post(
                "/api/payments/webhooks/pg",
                content=raw,
                headers={"Content-Type": "application/json"},
            )
            assert r.status_code == 400, (raw, r.text)
            assert r.json()["code"] == "invalid_webhook"
        # A well-formed hint about a payment nobody has: acknowledged, ignored.
        r = await client.post(
            "/api/payments/webhooks/pg",
            json={
                "eventType": "PAYMENT_STATUS_CHANGED",
                "data": {"paymentKey": "nope" * 5, "orderId": "ord_unknown_1", "status": "DONE"},
            },
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "ignored"
    assert await _count(payments.platform) == before
