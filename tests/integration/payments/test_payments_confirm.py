"""``POST /api/payments/confirm``: approve, decline, lost response, amount tampering,
idempotent replay, concurrent confirms, ownership. The sandbox PG's per-order charge count is
the proof of what was charged."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter

from tests.integration.payments.conftest import EventTap, Payments
from tests.support.platform import User

APPROVE = "4111111111110000"
DECLINE = "4111111111110002"
LOST = "4111111111110009"


async def test_readyz_checks_database_and_redis_not_the_broker(payments: Payments) -> None:
    async with payments.platform.client(base_url=payments.platform.url("payments")) as client:
        r = await client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"database": "ok", "redis": "ok"}


async def test_approve(payments: Payments, buyer: User, events: EventTap) -> None:
    order = payments.orders.add(buyer.id, 129_000)
    key = await payments.authorize(order["id"], 129_000, APPROVE)

    r = await payments.confirm(buyer, order["id"], key, 129_000)

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "DONE"
    assert body["order_id"] == order["id"]
    assert body["amount"] == 129_000
    assert body["approved_at"].endswith("Z")
    assert body["id"].startswith("pay_")
    assert len(body["id"]) >= 20
    assert (await payments.charges(order["id"]))["charges"] == 1
    shown = await payments.wait_status(buyer, body["id"], "DONE", within=1)
    assert shown["amount"] == 129_000
    approved = await events.wait("payment.approved", order["id"])
    assert approved[0]["payment_id"] == body["id"]
    assert approved[0]["buyer_id"] == buyer.id
    assert approved[0]["amount"] == 129_000


async def test_decline(payments: Payments, buyer: User, events: EventTap) -> None:
    order = payments.orders.add(buyer.id, 99_000)
    key = await payments.authorize(order["id"], 99_000, DECLINE)
    idem = secrets.token_hex(8)

    r = await payments.confirm(buyer, order["id"], key, 99_000, key=idem)

    assert r.status_code == 402, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["code"] == "payment_declined"
    assert problem["pg_code"] == "REJECT_CARD_PAYMENT"
    assert (await payments.charges(order["id"]))["charges"] == 0
    failed = await events.wait("payment.failed", order["id"])
    assert failed[0]["payment_id"] == problem["payment_id"]
    assert failed[0]["code"] == "REJECT_CARD_PAYMENT"
    shown = await payments.wait_status(buyer, problem["payment_id"], "ABORTED", within=1)
    assert shown["failure"]["code"] == "REJECT_CARD_PAYMENT"
    # Replay: the stored answer, and still no charge.
    again = await payments.confirm(buyer, order["id"], key, 99_000, key=idem)
    assert again.status_code == 402
    assert again.json() == problem
    # A decline fails the order: no second attempt with another card.
    other = await payments.authorize(order["id"], 99_000, APPROVE)
    r = await payments.confirm(buyer, order["id"], other, 99_000)
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "invalid_state"
    assert (await payments.charges(order["id"]))["charges"] == 0
    assert len(events.of("payment.failed", order["id"])) == 1


async def test_lost_response_is_unknown_then_reconciled_to_one_charge(
    payments: Payments, buyer: User, events: EventTap
) -> None:
    order = payments.orders.add(buyer.id, 150_000)
    key = await payments.authorize(order["id"], 150_000, LOST)

    r = await payments.confirm(buyer, order["id"], key, 150_000)

    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "UNKNOWN"
    assert not events.of("payment.failed", order["id"])
    # The platform's payments worker asks the PG by order id and finds it approved.
    done = await payments.wait_status(buyer, body["id"], "DONE")
    assert done["approved_at"] is not None
    approved = await events.wait("payment.approved", order["id"])
    assert [e["payment_id"] for e in approved] == [body["id"]]
    assert (await payments.charges(order["id"]))["charges"] == 1
    # The buyer retrying the confirm now gets the final answer, still one charge.
    r = await payments.confirm(buyer, order["id"], key, 150_000)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "DONE"
    await asyncio.sleep(0.5)
    assert (await payments.charges(order["id"]))["charges"] == 1
    assert len(events.of("payment.approved", order["id"])) == 1
    assert not events.of("payment.failed", order["id"])


async def test_amount_tampering_charges_nothing_and_the_order_stays_payable(
    payments: Payments, buyer: User
) -> None:
    order = payments.orders.add(buyer.id, 210_000)
    # The client authorized 1,000 at the PG and asks us to confirm 1,000.
    cheap = await payments.authorize(order["id"], 1_000, APPROVE)
    r = await payments.confirm(buyer, order["id"], cheap, 1_000)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "amount_mismatch"
    # Right amount at the PG, wrong amount to us.
    right = await payments.authorize(order["id"], 210_000, APPROVE)
    r = await payments.confirm(buyer, order["id"], right, 209_999)
    assert r.json()["code"] == "amount_mismatch"
    assert (await payments.charges(order["id"]))["charges"] == 0

    r = await payments.confirm(buyer, order["id"], right, 210_000)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "DONE"
    charges = await payments.charges(order["id"])
    assert (charges["charges"], charges["charged_amount"]) == (1, 210_000)


async def test_idempotent_replay(payments: Payments, buyer: User, events: EventTap) -> None:
    order = payments.orders.add(buyer.id, 80_000)
    key = await payments.authorize(order["id"], 80_000, APPROVE)
    idem = secrets.token_hex(8)

    first = await payments.confirm(buyer, order["id"], key, 80_000, key=idem)
    calls = payments.orders.calls
    second = await payments.confirm(buyer, order["id"], key, 80_000, key=idem)

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert payments.orders.calls == calls  # the replay came from the key store
    reused = await payments.confirm(buyer, order["id"], key, 80_001, key=idem)
    assert reused.status_code == 422, reused.text
    assert reused.json()["code"] == "idempotency_key_reused"
    # The same confirm under a new key: the payment's state, not a second charge.
    third = await payments.confirm(buyer, order["id"], key, 80_000)
    assert third.status_code == 200
    assert third.json()["id"] == first.json()["id"]
    assert (await payments.charges(order["id"]))["charges"] == 1
    await events.wait("payment.approved", order["id"])
    await asyncio.sleep(0.3)
    assert len(events.of("payment.approved", order["id"])) == 1


async def test_concurrent_confirms_of_one_order_charge_once(
    payments: Payments, buyer: User, events: EventTap
) -> None:
    order = payments.orders.add(buyer.id, 55_000)
    # Several authorizations of the same order (tabs, double clicks), each confirmed many times
    # concurrently under different Idempotency-Keys, and some under a shared one.
    keys = [await payments.authorize(order["id"], 55_000, APPROVE) for _ in range(4)]
    shared = secrets.token_hex(8)
    calls = [
        payments.confirm(
            buyer, order["id"], keys[i % 4], 55_000, key=shared if i % 4 == 0 else None
        )
        for i in range(200)
    ]

    responses = await asyncio.gather(*calls)

    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 202, 409}, statuses
    assert not [r for r in responses if r.status_code >= 500]
    winners = {r.json()["id"] for r in responses if r.status_code in (200, 202)}
    assert len(winners) == 1, winners
    for r in responses:
        if r.status_code == 409:
            assert r.json()["code"] in ("invalid_state", "idempotency_key_in_use")
    charges = await payments.charges(order["id"])
    assert (charges["charges"], charges["charged_amount"]) == (1, 55_000)
    await events.wait("payment.approved", order["id"])
    await asyncio.sleep(0.3)
    assert len(events.of("payment.approved", order["id"])) == 1


async def test_someone_elses_order_or_payment_is_not_found(
    payments: Payments, buyer: User, other_buyer: User
) -> None:
    order = payments.orders.add(buyer.id, 70_000)
    key = await payments.authorize(order["id"], 70_000, APPROVE)

    # B confirms A's order (with A's payment key, even): as if it did not exist.
    r = await payments.confirm(other_buyer, order["id"], key, 70_000)
    assert r.status_code == 404, r.text
    assert r.json()["code"] == "not_found"
    assert (await payments.charges(order["id"]))["charges"] == 0

    r = await payments.confirm(buyer, order["id"], key, 70_000)
    assert r.status_code == 200
    payment_id = r.json()["id"]
    # ... and after A paid.
    r = await payments.confirm(other_buyer, order["id"], key, 70_000)
    assert r.status_code == 404
    client = payments.http
    r = await client.get(f"/api/payments/{payment_id}", headers=other_buyer.auth)
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"
    r = await client.get("/api/payments/pay_" + secrets.token_urlsafe(16), headers=buyer.auth)
    assert r.status_code == 404
    r = await client.get(f"/api/payments/{payment_id}", headers=buyer.auth)
    assert r.status_code == 200
    # An unknown order.
    r = await payments.confirm(buyer, "ord" + secrets.token_urlsafe(16), key, 70_000)
    assert r.status_code == 404
    assert (await payments.charges(order["id"]))["charges"] == 1


async def test_unpayable_orders_are_invalid_state(payments: Payments, buyer: User) -> None:
    for overrides in (
        {"status": "CANCELLED"},
        {"status": "EXPIRED"},
        {"status": "PREPARING"},
        {"expires_at": "2020-01-01T00:00:00Z"},  # past its time, not yet swept
    ):
        order = payments.orders.add(buyer.id, 10_000, **overrides)
        key = await payments.authorize(order["id"], 10_000, APPROVE)
        r = await payments.confirm(buyer, order["id"], key, 10_000)
        assert r.status_code == 409, (overrides, r.text)
        assert r.json()["code"] == "invalid_state"
        assert (await payments.charges(order["id"]))["charges"] == 0
