"""The payments internal API for draws (``/internal/billing-keys/verify``, ``/internal/charges``)
in the payments harness (conftest: real MariaDB, RabbitMQ and sandbox PG, in-process payments
app and workers, fake orders). The sandbox's webhooks go to the platform's payments, which knows
none of these payments, so only this harness's reconciler can resolve a lost answer here.

The same calls with the real orders service: test_billing_platform.py."""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis
from tests.integration.payments.conftest import EventTap, Payments
from tests.support.net import free_port
from tests.support.platform import User

from snapshoe.kernel.clock import utcnow
from snapshoe.kernel.internal import internal_headers
from snapshoe.payments import repository as repo
from snapshoe.payments.domain import Method, billing_idempotency_key, new_payment_id
from snapshoe.payments.pg import TossPaymentsClient
from snapshoe.sandbox_pg.repository import idempotency_scope

APPROVE = "4111111111110000"
DECLINE = "4111111111110002"
LOST = "4111111111110009"


async def issue(payments: Payments, customer_key: str, card: str = APPROVE) -> dict[str, Any]:
    r = await payments.pg.post(
        "/v1/billing/authorizations/card",
        json={
            "customerKey": customer_key,
            "cardNumber": card,
            "cardExpirationYear": "31",
            "cardExpirationMonth": "01",
        },
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _internal(payments: Payments) -> dict[str, str]:
    return internal_headers(payments.settings)


async def charge(
    payments: Payments, order_id: str, billing_key: str, customer_key: str, **extra: Any
) -> httpx.Response:
    return await payments.http.post(
        "/internal/charges",
        json={
            "order_id": order_id,
            "billing_key": billing_key,
            "customer_key": customer_key,
            "order_name": "Air Jordan 1 (draw)",
            **extra,
        },
        headers=_internal(payments),
    )


async def verify(payments: Payments, billing_key: str, customer_key: str) -> httpx.Response:
    return await payments.http.post(
        "/internal/billing-keys/verify",
        json={"billing_key": billing_key, "customer_key": customer_key},
        headers=_internal(payments),
    )


async def row(payments: Payments, payment_id: str) -> Any:
    async with payments.deps.sessions.begin() as session:
        return await repo.get(session, payment_id)


async def test_verify_answers_the_card_of_the_customer_s_billing_key(
    payments: Payments, buyer: User, other_buyer: User
) -> None:
    issued = await issue(payments, buyer.id)
    r = await verify(payments, issued["billingKey"], buyer.id)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "billing_key": issued["billingKey"],
        "card_number": "41111111****000*",
        "card_fingerprint": issued["card"]["fingerprint"],
    }
    # Another customer's key, or one the PG never issued: 422 billing_key_invalid.
    for key, customer in ((issued["billingKey"], other_buyer.id), ("nope" * 11, buyer.id)):
        r = await verify(payments, key, customer)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "billing_key_invalid"


async def test_verify_is_503_when_the_pg_cannot_be_reached(payments: Payments, buyer: User) -> None:
    issued = await issue(payments, buyer.id)
    real = payments.deps.pg
    payments.deps.pg = TossPaymentsClient(f"http://127.0.0.1:{free_port()}", "sk", timeout=1)
    try:
        r = await verify(payments, issued["billingKey"], buyer.id)
    finally:
        await payments.deps.pg.aclose()
        payments.deps.pg = real
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "service_unavailable"


async def test_internal_routes_need_the_internal_token(payments: Payments, buyer: User) -> None:
    order = payments.orders.add(buyer.id, 10_000)
    issued = await issue(payments, buyer.id)
    for headers in ({}, {"X-Internal-Token": "wrong"}, buyer.auth):
        for path, body in (
            ("/internal/billing-keys/verify", {"billing_key": "k", "customer_key": buyer.id}),
            (
                "/internal/charges",
                {
                    "order_id": order["id"],
                    "billing_key": issued["billingKey"],
                    "customer_key": buyer.id,
                    "order_name": "x",
                },
            ),
        ):
            r = await payments.http.post(path, json=body, headers=headers)
            assert r.status_code == 403, (path, r.text)
            assert r.json()["code"] == "forbidden"
    assert (await payments.charges(order["id"]))["charges"] == 0


async def test_bad_input_is_422_and_the_amount_is_never_the_caller_s(
    payments: Payments, buyer: User
) -> None:
    order = payments.orders.add(buyer.id, 10_000)
    key = (await issue(payments, buyer.id))["billingKey"]
    for extra in (
        {"amount": 1},  # the amount is the order's: a caller cannot even say one
        {"order_id": "short"},
        {"order_id": "bad/../id!"},
        {"customer_key": "has space"},
        {"order_name": ""},
        {"order_name": "x" * 101},
        {"billing_key": ""},
    ):
        body: dict[str, Any] = {
            "order_id": order["id"],
            "billing_key": key,
            "customer_key": buyer.id,
            "order_name": "x",
            **extra,
        }
        r = await payments.http.post("/internal/charges", json=body, headers=_internal(payments))
        assert r.status_code == 422, (extra, r.text)
        assert r.json()["code"] == "validation_error"
    r = await payments.http.post(
        "/internal/charges",
        content=b"{",
        headers={**_internal(payments), "content-type": "application/json"},
    )
    assert (r.status_code, r.json()["code"]) == (400, "invalid_json"), r.text
    assert (await payments.charges(order["id"]))["charges"] == 0
    r = await charge(payments, order["id"], key, buyer.id)
    assert r.json()["status"] == "DONE"
    counted = await payments.charges(order["id"])
    assert (counted["charges"], counted["charged_amount"]) == (1, 10_000)


async def test_a_decline_fails_the_payment_once(
    payments: Payments, buyer: User, events: EventTap
) -> None:
    order = payments.orders.add(buyer.id, 77_000)
    key = (await issue(payments, buyer.id, DECLINE))["billingKey"]
    r = await charge(payments, order["id"], key, buyer.id)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "FAILED"
    assert body["pg_code"] == "REJECT_CARD_PAYMENT"
    assert body["order_id"] == order["id"]
    failed = await events.wait("payment.failed", order["id"])
    assert [e["payment_id"] for e in failed] == [body["payment_id"]]
    again = await charge(payments, order["id"], key, buyer.id)
    assert again.json() == body
    assert (await payments.charges(order["id"]))["charges"] == 0
    await asyncio.sleep(0.3)
    assert len(events.of("payment.failed", order["id"])) == 1
    assert not events.of("payment.approved", order["id"])


async def test_a_lost_answer_is_unknown_then_the_reconciler_finds_it_approved(
    payments: Payments, buyer: User, events: EventTap
) -> None:
    order = payments.orders.add(buyer.id, 150_000)
    key = (await issue(payments, buyer.id, LOST))["billingKey"]
    r = await charge(payments, order["id"], key, buyer.id)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "UNKNOWN"
    assert body["pg_code"] == "TRANSPORT_ERROR"
    unknown = await row(payments, body["payment_id"])
    assert (unknown.method, unknown.payment_key, unknown.billing_key) == (Method.BILLING, "", key)

    done = await payments.wait_status(buyer, body["payment_id"], "DONE")
    assert done["approved_at"] is not None
    approved = await events.wait("payment.approved", order["id"])
    assert [e["payment_id"] for e in approved] == [body["payment_id"]]
    at_pg = (await payments.pg.get(f"/v1/payments/orders/{order['id']}")).json()
    assert at_pg["status"] == "DONE"
    # The reconciler learned the PG's payment key (refunds and rechecks need it).
    assert (await row(payments, body["payment_id"])).payment_key == at_pg["paymentKey"]
    again = await charge(payments, order["id"], key, buyer.id)
    assert again.json()["status"] == "DONE"
    assert again.json()["payment_id"] == body["payment_id"]
    assert (await payments.charges(order["id"]))["charges"] == 1
    assert not events.of("payment.failed", order["id"])


async def test_when_the_pg_has_none_the_reconciler_charges_again_under_the_same_key(
    payments: Payments, buyer: User, events: EventTap
) -> None:
    order = payments.orders.add(buyer.id, 60_000)
    key = (await issue(payments, buyer.id))["billingKey"]
    # The charge never reaches the PG (refused connections): its outcome is unknown to us.
    real = payments.deps.pg
    payments.deps.pg = TossPaymentsClient(f"http://127.0.0.1:{free_port()}", "sk", timeout=1)
    try:
        r = await charge(payments, order["id"], key, buyer.id)
    finally:
        await payments.deps.pg.aclose()
        payments.deps.pg = real
    body = r.json()
    assert (body["status"], body["pg_code"]) == ("UNKNOWN", "CONNECT_ERROR")
    assert (await payments.pg.get(f"/v1/payments/orders/{order['id']}")).status_code == 404

    await payments.wait_status(buyer, body["payment_id"], "DONE")
    assert (await payments.charges(order["id"]))["charges"] == 1
    assert len(await events.wait("payment.approved", order["id"])) == 1
    # The PG stored its answer under the key derived from the payment id: the re-send used it.
    settings = payments.platform.settings
    scope = idempotency_scope(
        settings.pg_secret_key,
        "POST",
        f"/v1/billing/{key}",
        billing_idempotency_key(body["payment_id"]),
    )
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        stored = await client.get(f"{settings.namespace}:sandbox_pg:idem:{scope}")
    finally:
        await client.aclose()
    assert stored is not None
    record = orjson.loads(stored)
    assert (record["state"], record["status"]) == ("done", 200)
    assert record["body"]["orderId"] == order["id"]


async def test_one_order_is_charged_once_however_often_and_concurrently_asked(
    payments: Payments, buyer: User, events: EventTap
) -> None:
    order = payments.orders.add(buyer.id, 33_000)
    key = (await issue(payments, buyer.id))["billingKey"]
    calls = [charge(payments, order["id"], key, buyer.id) for _ in range(20)]
    results = await asyncio.gather(*calls)
    assert {r.status_code for r in results} == {200}
    assert len({r.json()["payment_id"] for r in results}) == 1
    assert {r.json()["status"] for r in results} <= {"DONE", "IN_PROGRESS"}
    final = await charge(payments, order["id"], key, buyer.id)
    assert final.json()["status"] == "DONE"
    assert (await payments.charges(order["id"]))["charges"] == 1
    await events.wait("payment.approved", order["id"])
    await asyncio.sleep(0.3)
    assert len(events.of("payment.approved", order["id"])) == 1


async def test_orders_that_cannot_be_charged_are_refused_and_nothing_charged(
    payments: Payments, buyer: User, other_buyer: User
) -> None:
    key = (await issue(payments, buyer.id))["billingKey"]
    cases: list[tuple[dict[str, Any] | None, str, int, str]] = [
        ({"status": "CANCELLED"}, buyer.id, 409, "invalid_state"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, buyer.id, 409, "invalid_state"),
        ({}, other_buyer.id, 404, "not_found"),  # the order is not this customer's
        (None, buyer.id, 404, "not_found"),  # no such order
    ]
    for overrides, customer_key, status, code in cases:
        if overrides is None:
            order_id = "ord" + secrets.token_urlsafe(16)
        else:
            order_id = payments.orders.add(buyer.id, 10_000, **overrides)["id"]
        r = await charge(payments, order_id, key, customer_key)
        assert r.status_code == status, (overrides, r.text)
        assert r.json()["code"] == code
        assert (await payments.charges(order_id))["charges"] == 0


async def test_an_order_paid_otherwise_is_never_charged_again(
    payments: Payments, buyer: User
) -> None:
    # Paid by the buyer's own confirm: the billing charge is refused.
    order = payments.orders.add(buyer.id, 20_000)
    payment_key = await payments.authorize(order["id"], 20_000, APPROVE)
    assert (await payments.confirm(buyer, order["id"], payment_key, 20_000)).status_code == 200
    key = (await issue(payments, buyer.id))["billingKey"]
    r = await charge(payments, order["id"], key, buyer.id)
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "invalid_state"
    # Charged through one billing key: another key, or a confirm, cannot charge it again.
    order = payments.orders.add(buyer.id, 20_000)
    assert (await charge(payments, order["id"], key, buyer.id)).json()["status"] == "DONE"
    other_key = (await issue(payments, buyer.id))["billingKey"]
    r = await charge(payments, order["id"], other_key, buyer.id)
    assert (r.status_code, r.json()["code"]) == (409, "invalid_state")
    r = await payments.confirm(buyer, order["id"], "pk_" + secrets.token_hex(8), 20_000)
    assert (r.status_code, r.json()["code"]) == (409, "invalid_state")
    assert (await payments.charges(order["id"]))["charges"] == 1


async def _billing_in_flight(payments: Payments, buyer: User, order_id: str, key: str) -> str:
    """A billing payment whose charge is in flight: IN_PROGRESS, its payment key not known."""
    payment_id = new_payment_id()
    now = utcnow()
    async with payments.deps.sessions.begin() as session:
        await repo.insert_in_progress(
            session,
            payment_id=payment_id,
            order_id=order_id,
            buyer_id=buyer.id,
            payment_key="",
            amount=41_000,
            now=now,
            check_at=now + timedelta(hours=1),
            method=Method.BILLING,
            billing_key=key,
            order_name="x",
        )
    return payment_id


async def test_a_webhook_before_the_answer_teaches_the_payment_key(
    payments: Payments, buyer: User, events: EventTap
) -> None:
    order = payments.orders.add(buyer.id, 41_000)
    key = (await issue(payments, buyer.id))["billingKey"]
    payment_id = await _billing_in_flight(payments, buyer, order["id"], key)
    # Our charge reached the PG ...
    r = await payments.pg.post(
        f"/v1/billing/{key}",
        json={"customerKey": buyer.id, "amount": 41_000, "orderId": order["id"], "orderName": "x"},
        headers={"Idempotency-Key": billing_idempotency_key(payment_id)},
    )
    assert r.status_code == 200, r.text
    at_pg = r.json()
    # ... and the PG's webhook comes first: a hint naming a payment key we do not know yet.
    hook = {"eventType": "PAYMENT_STATUS_CHANGED", "createdAt": "2026-01-01T00:00:00"}
    hook["data"] = at_pg
    ack = await payments.http.post("/api/payments/webhooks/pg", json=hook)
    assert ack.status_code == 200, ack.text
    assert ack.json() == {"status": "ok", "payment_status": "DONE"}
    p = await row(payments, payment_id)
    assert (p.status.value, p.payment_key) == ("DONE", at_pg["paymentKey"])
    approved = await events.wait("payment.approved", order["id"])
    assert [e["payment_id"] for e in approved] == [payment_id]


async def test_a_forged_hint_for_a_payment_in_flight_changes_nothing(
    payments: Payments, buyer: User
) -> None:
    order = payments.orders.add(buyer.id, 41_000)
    key = (await issue(payments, buyer.id))["billingKey"]
    payment_id = await _billing_in_flight(payments, buyer, order["id"], key)
    forged = {
        "eventType": "PAYMENT_STATUS_CHANGED",
        "createdAt": "2026-01-01T00:00:00",
        "data": {"paymentKey": "x" * 50, "orderId": order["id"], "status": "DONE"},
    }
    ack = await payments.http.post("/api/payments/webhooks/pg", json=forged)
    assert ack.status_code == 200, ack.text
    # The hint is followed at the PG, which knows no such payment: nothing is settled on it.
    assert ack.json() == {"status": "deferred", "payment_status": "IN_PROGRESS"}
    p = await row(payments, payment_id)
    assert (p.status.value, p.payment_key) == ("IN_PROGRESS", "")
