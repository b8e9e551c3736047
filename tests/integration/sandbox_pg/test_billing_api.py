"""The sandbox PG's billing API (Toss 자동결제) over real HTTP: issuing a billing key (masked
number, fingerprint), charging it (approve, decline, lost answer, duplicate order id,
Idempotency-Key replay, customer mismatch, knobs), the look-up, auth and bad input."""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import Any

import httpx
import orjson
import pytest
from tests.integration.sandbox_pg.conftest import order_id
from tests.integration.sandbox_pg.server import SandboxServer, WebhookReceiver, basic

KST_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+09:00$")
APPROVE = "4330123412340000"
DECLINE = "4330123412340002"
LOST = "4330123412340009"


def customer() -> str:
    return "cust_" + secrets.token_urlsafe(10)


async def issue(
    pg: httpx.AsyncClient, customer_key: str, card: str = APPROVE, **extra: Any
) -> dict[str, Any]:
    # The buyer's step: no secret key (a browser does it through the gateway).
    r = await pg.post(
        "/v1/billing/authorizations/card",
        json={
            "customerKey": customer_key,
            "cardNumber": card,
            "cardExpirationYear": "30",
            "cardExpirationMonth": "07",
            **extra,
        },
        headers={"Authorization": ""},
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def charge(
    pg: httpx.AsyncClient,
    billing_key: str,
    customer_key: str,
    oid: str,
    amount: int = 99000,
    idem: str | None = None,
) -> httpx.Response:
    headers = {"Idempotency-Key": idem} if idem else {}
    return await pg.post(
        f"/v1/billing/{billing_key}",
        json={
            "customerKey": customer_key,
            "amount": amount,
            "orderId": oid,
            "orderName": "Air Max 1 (draw)",
            "customerEmail": "ignored@example.com",
        },
        headers=headers,
    )


async def charges(pg: httpx.AsyncClient, oid: str) -> dict[str, Any]:
    r = await pg.get(f"/v1/sandbox/orders/{oid}/charges")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def test_issue_gives_a_toss_billing_key_with_a_masked_number(pg: httpx.AsyncClient) -> None:
    ck = customer()
    body = await issue(pg, ck, "4330-1234-1234-1234", cardPassword="12")
    assert body["customerKey"] == ck
    assert body["method"] == "카드"
    assert body["mId"]
    assert KST_RE.match(body["authenticatedAt"])
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}=", body["billingKey"])
    assert body["cardCompany"]
    assert body["cardNumber"] == "43301234****123*"
    card = body["card"]
    assert card["number"] == "43301234****123*"
    assert (card["issuerCode"], card["acquirerCode"]) == ("71", "71")
    assert (card["cardType"], card["ownerType"]) == ("신용", "개인")
    assert re.fullmatch(r"[0-9a-f]{64}", card["fingerprint"])
    assert "4330123412341234" not in str(body)
    # Stored: the look-up (secret key) answers the key as issued.
    got = await pg.get(f"/v1/billing/{body['billingKey']}")
    assert got.status_code == 200, got.text
    assert got.json() == body


async def test_the_same_card_has_the_same_fingerprint_for_two_customers(
    pg: httpx.AsyncClient,
) -> None:
    alice = await issue(pg, customer(), APPROVE)
    bob = await issue(pg, customer(), "4330 1234 1234 0000")  # same digits, other spelling
    other = await issue(pg, alice["customerKey"], DECLINE)
    assert alice["billingKey"] != bob["billingKey"]
    assert alice["card"]["fingerprint"] == bob["card"]["fingerprint"]
    assert other["card"]["fingerprint"] != alice["card"]["fingerprint"]
    # Each key stays its own customer's.
    assert (await pg.get(f"/v1/billing/{bob['billingKey']}")).json()["customerKey"] == bob[
        "customerKey"
    ]


async def test_charge_approves_a_toss_payment_found_by_order_id(pg: httpx.AsyncClient) -> None:
    ck = customer()
    key = (await issue(pg, ck))["billingKey"]
    oid = order_id()
    r = await charge(pg, key, ck, oid, idem="bill-1-" + oid)
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["status"] == "DONE"
    assert p["method"] == "카드"
    assert p["type"] == "BILLING"
    assert p["orderId"] == oid
    assert p["orderName"] == "Air Max 1 (draw)"
    assert p["totalAmount"] == p["balanceAmount"] == 99000
    assert KST_RE.match(p["approvedAt"])
    assert len(p["paymentKey"]) == 50
    assert p["card"]["number"].endswith("0000")
    assert p["failure"] is None
    assert (await charges(pg, oid))["charges"] == 1
    for path in (f"/v1/payments/orders/{oid}", f"/v1/payments/{p['paymentKey']}"):
        got = await pg.get(path)
        assert got.status_code == 200, got.text
        assert got.json() == p
    # The same key charges another order: a new payment.
    again = await charge(pg, key, ck, order_id())
    assert again.status_code == 200
    assert again.json()["paymentKey"] != p["paymentKey"]


async def test_card_0002_declines_and_the_failed_payment_is_kept(pg: httpx.AsyncClient) -> None:
    ck = customer()
    key = (await issue(pg, ck, DECLINE))["billingKey"]
    oid = order_id()
    r = await charge(pg, key, ck, oid)
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "REJECT_CARD_PAYMENT"
    p = (await pg.get(f"/v1/payments/orders/{oid}")).json()
    assert p["status"] == "ABORTED"
    assert p["type"] == "BILLING"
    assert p["failure"]["code"] == "REJECT_CARD_PAYMENT"
    assert (await charges(pg, oid))["charges"] == 0


async def test_card_0009_is_approved_and_the_answer_lost(pg: httpx.AsyncClient) -> None:
    ck = customer()
    key = (await issue(pg, ck, LOST))["billingKey"]
    oid = order_id()
    with pytest.raises(httpx.TransportError):
        await charge(pg, key, ck, oid, idem="lost-" + oid)
    found = (await pg.get(f"/v1/payments/orders/{oid}")).json()
    assert found["status"] == "DONE"
    assert (await charges(pg, oid))["charges"] == 1
    # The same Idempotency-Key: the stored answer, delivered this time.
    replay = await charge(pg, key, ck, oid, idem="lost-" + oid)
    assert replay.status_code == 200, replay.text
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == found
    # Another key: the order id is taken.
    other = await charge(pg, key, ck, oid, idem="lost-2-" + oid)
    assert other.status_code == 400
    assert other.json()["code"] == "DUPLICATED_ORDER_ID"
    assert (await charges(pg, oid))["charges"] == 1


async def test_an_order_id_already_approved_is_duplicated(pg: httpx.AsyncClient) -> None:
    ck = customer()
    key = (await issue(pg, ck))["billingKey"]
    oid = order_id()
    first = await charge(pg, key, ck, oid, idem="a-" + oid)
    assert first.status_code == 200
    for idem in ("b-" + oid, None):
        dup = await charge(pg, key, ck, oid, idem=idem)
        assert dup.status_code == 400, dup.text
        assert dup.json()["code"] == "DUPLICATED_ORDER_ID"
    # Through another customer's card too: the order id is what is taken.
    ck2 = customer()
    key2 = (await issue(pg, ck2))["billingKey"]
    dup = await charge(pg, key2, ck2, oid)
    assert dup.json()["code"] == "DUPLICATED_ORDER_ID"
    assert (await charges(pg, oid))["charges"] == 1
    assert (await pg.get(f"/v1/payments/orders/{oid}")).json() == first.json()


async def test_a_declined_order_id_may_be_charged_again(pg: httpx.AsyncClient) -> None:
    ck = customer()
    bad = (await issue(pg, ck, DECLINE))["billingKey"]
    good = (await issue(pg, ck))["billingKey"]
    oid = order_id()
    assert (await charge(pg, bad, ck, oid)).status_code == 403
    r = await charge(pg, good, ck, oid)
    assert r.status_code == 200, r.text
    assert (await pg.get(f"/v1/payments/orders/{oid}")).json()["status"] == "DONE"
    assert (await charges(pg, oid))["charges"] == 1


async def test_the_same_idempotency_key_replays_the_first_answer(pg: httpx.AsyncClient) -> None:
    ck = customer()
    key = (await issue(pg, ck))["billingKey"]
    oid = order_id()
    first = await charge(pg, key, ck, oid, idem="same-" + oid)
    second = await charge(pg, key, ck, oid, idem="same-" + oid)
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    # As Toss: the body is not compared; the key's first answer comes back.
    third = await charge(pg, key, ck, order_id(), amount=5, idem="same-" + oid)
    assert third.json() == first.json()
    assert (await charges(pg, oid))["charges"] == 1


async def test_concurrent_charges_of_one_order_approve_once(pg: httpx.AsyncClient) -> None:
    ck = customer()
    key = (await issue(pg, ck))["billingKey"]
    oid = order_id()
    results = await asyncio.gather(*(charge(pg, key, ck, oid, idem=f"c{i}") for i in range(50)))
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(200) == 1, statuses
    assert all(r.json()["code"] == "DUPLICATED_ORDER_ID" for r in results if r.status_code != 200)
    assert (await charges(pg, oid))["charges"] == 1


async def test_another_customer_or_an_unknown_key_is_refused(pg: httpx.AsyncClient) -> None:
    ck = customer()
    key = (await issue(pg, ck))["billingKey"]
    oid = order_id()
    r = await charge(pg, key, customer(), oid)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "NOT_MATCHES_CUSTOMER_KEY"
    r = await charge(pg, "nope" + key[4:], ck, oid)
    assert r.status_code == 400
    assert r.json()["code"] == "INVALID_BILL_KEY_REQUEST"
    assert (await charges(pg, oid))["charges"] == 0
    assert (await pg.get(f"/v1/payments/orders/{oid}")).status_code == 404
    r = await pg.get("/v1/billing/nope")
    assert r.status_code == 404
    assert r.json()["code"] == "NOT_FOUND_BILLING"


async def test_charge_and_look_up_need_the_secret_key(
    pg: httpx.AsyncClient, sandbox: SandboxServer
) -> None:
    ck = customer()
    key = (await issue(pg, ck))["billingKey"]
    oid = order_id()
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        for headers in ({}, basic("test_sk_wrong"), {"Authorization": "Basic !!"}):
            r = await client.post(
                f"/v1/billing/{key}",
                json={"customerKey": ck, "amount": 1000, "orderId": oid, "orderName": "x"},
                headers=headers,
            )
            assert r.status_code == 401, r.text
            assert r.json()["code"] == "UNAUTHORIZED_KEY"
            r = await client.get(f"/v1/billing/{key}", headers=headers)
            assert r.status_code == 401
    assert (await charges(pg, oid))["charges"] == 0


async def test_knobs_apply_to_billing_charges(pg: httpx.AsyncClient) -> None:
    ck = customer()
    key = (await issue(pg, ck))["billingKey"]
    await pg.put("/v1/sandbox/config", json={"decline_rate": 1.0})
    r = await charge(pg, key, ck, order_id())
    assert r.status_code == 403
    assert r.json()["code"] == "REJECT_CARD_PAYMENT"
    await pg.put("/v1/sandbox/config", json={"error_rate": 1.0})
    oid = order_id()
    r = await charge(pg, key, ck, oid, idem="err-" + oid)
    assert r.status_code == 500
    assert r.json()["code"] == "FAILED_INTERNAL_SYSTEM_PROCESSING"
    assert (await pg.get(f"/v1/payments/orders/{oid}")).status_code == 404
    await pg.put("/v1/sandbox/config", json={"lost_response_rate": 1.0})
    with pytest.raises(httpx.TransportError):
        await charge(pg, key, ck, oid, idem="err-" + oid)  # a 5xx frees the key: runs now
    assert (await charges(pg, oid))["charges"] == 1


async def test_a_billing_charge_sends_the_webhook(
    pg: httpx.AsyncClient, webhooks: WebhookReceiver
) -> None:
    ck = customer()
    key = (await issue(pg, ck))["billingKey"]
    r = await charge(pg, key, ck, order_id())
    payment_key = r.json()["paymentKey"]
    event = await webhooks.wait_for(lambda e: e["data"]["paymentKey"] == payment_key)
    assert event["eventType"] == "PAYMENT_STATUS_CHANGED"
    assert event["data"]["status"] == "DONE"
    assert event["data"]["type"] == "BILLING"


def _card(**fields: Any) -> dict[str, Any]:
    return {
        "customerKey": "cust_123",
        "cardNumber": APPROVE,
        "cardExpirationYear": "30",
        "cardExpirationMonth": "07",
        **fields,
    }


BAD_ISSUES: list[tuple[Any, str]] = [
    (None, "INVALID_REQUEST"),
    ("{", "INVALID_REQUEST"),
    ("[]", "INVALID_REQUEST"),
    ({}, "INVALID_REQUEST"),
    ({k: v for k, v in _card().items() if k != "customerKey"}, "INVALID_REQUEST"),
    (_card(customerKey="x"), "INVALID_REQUEST"),
    (_card(customerKey="has space"), "INVALID_REQUEST"),
    (_card(customerKey="k" * 301), "INVALID_REQUEST"),
    (_card(cardNumber=4330123412340000), "INVALID_REQUEST"),
    (_card(cardNumber="1234"), "INVALID_CARD_NUMBER"),
    (_card(cardNumber="4330abcd12340000"), "INVALID_CARD_NUMBER"),
    (_card(cardNumber="٤٣٣٠١٢٣٤١٢٣٤٠٠٠٠"), "INVALID_CARD_NUMBER"),
    (_card(cardExpirationYear=30), "INVALID_REQUEST"),
    (_card(cardExpirationYear="2030"), "INVALID_REQUEST"),
    (_card(cardExpirationMonth="13"), "INVALID_REQUEST"),
    (_card(cardExpirationMonth="7"), "INVALID_REQUEST"),
    (_card(cardExpirationYear="20", cardExpirationMonth="01"), "INVALID_CARD_EXPIRATION"),
    (_card(cardPassword="123"), "INVALID_REQUEST"),
    (_card(customerIdentityNumber="8812"), "INVALID_REQUEST"),
]


@pytest.mark.parametrize(("body", "code"), BAD_ISSUES)
async def test_bad_issue_input_is_a_toss_400(pg: httpx.AsyncClient, body: Any, code: str) -> None:
    content = body.encode() if isinstance(body, str) else orjson.dumps(body) if body else b""
    r = await pg.post(
        "/v1/billing/authorizations/card",
        content=content,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["code"] == code
    assert r.json()["message"]


BAD_CHARGES: list[Any] = [
    {},
    {"customerKey": "cust_123", "amount": 1000, "orderId": "ord_123456"},
    {"customerKey": "cust_123", "amount": True, "orderId": "ord_123456", "orderName": "x"},
    {"customerKey": "cust_123", "amount": 0, "orderId": "ord_123456", "orderName": "x"},
    {"customerKey": "cust_123", "amount": "lots", "orderId": "ord_123456", "orderName": "x"},
    {"customerKey": "cust_123", "amount": 1.5, "orderId": "ord_123456", "orderName": "x"},
    {"customerKey": "cust_123", "amount": 1000, "orderId": "short", "orderName": "x"},
    {"customerKey": "cust_123", "amount": 1000, "orderId": "bad/../id!", "orderName": "x"},
    {"customerKey": "cust_123", "amount": 1000, "orderId": "ord_123456", "orderName": ""},
    {"customerKey": "c", "amount": 1000, "orderId": "ord_123456", "orderName": "x"},
]


@pytest.mark.parametrize("body", BAD_CHARGES)
async def test_bad_charge_input_is_a_toss_400(pg: httpx.AsyncClient, body: Any) -> None:
    ck = customer()
    key = (await issue(pg, ck))["billingKey"]
    r = await pg.post(f"/v1/billing/{key}", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "INVALID_REQUEST"
    r = await pg.post(
        f"/v1/billing/{key}",
        json={"customerKey": ck, "amount": 1000, "orderId": order_id(), "orderName": "x"},
        headers={"Idempotency-Key": "k" * 301},
    )
    assert r.status_code == 400
    assert r.json()["code"] == "INVALID_REQUEST"
