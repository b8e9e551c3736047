"""The sandbox PG over real HTTP (uvicorn), spoken to raw: Toss shapes, codes, idempotency,
the sandbox card numbers, knobs, charge counts, webhooks, bad input."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx
import pytest
from tests.integration.sandbox_pg.conftest import order_id
from tests.integration.sandbox_pg.server import SandboxServer, WebhookReceiver, basic

KST_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+09:00$")


async def authorize(
    pg: httpx.AsyncClient, card: str = "4330123412340000", amount: int = 189000
) -> tuple[str, str]:
    oid = order_id()
    # The buyer's step needs no secret key (a browser does it).
    r = await pg.post(
        "/v1/sandbox/authorizations",
        json={"order_id": oid, "amount": amount, "card_number": card},
        headers={"Authorization": ""},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "READY"
    assert body["order_id"] == oid
    assert body["amount"] == amount
    return body["payment_key"], oid


async def confirm(
    pg: httpx.AsyncClient, key: str, oid: str, amount: int = 189000, idem: str | None = None
) -> httpx.Response:
    headers = {"Idempotency-Key": idem} if idem else {}
    return await pg.post(
        "/v1/payments/confirm",
        json={"paymentKey": key, "orderId": oid, "amount": amount},
        headers=headers,
    )


async def charges(pg: httpx.AsyncClient, oid: str) -> dict[str, Any]:
    r = await pg.get(f"/v1/sandbox/orders/{oid}/charges")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def test_approve_gives_a_toss_payment(pg: httpx.AsyncClient) -> None:
    key, oid = await authorize(pg)
    r = await confirm(pg, key, oid)
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["paymentKey"] == key
    assert p["orderId"] == oid
    assert p["status"] == "DONE"
    assert p["method"] == "카드"
    assert p["totalAmount"] == p["balanceAmount"] == 189000
    assert p["suppliedAmount"] + p["vat"] == 189000
    assert KST_RE.match(p["requestedAt"])
    assert KST_RE.match(p["approvedAt"])
    assert p["card"]["number"].endswith("0000")
    assert "*" in p["card"]["number"]
    assert p["cancels"] is None
    assert p["failure"] is None
    assert (await charges(pg, oid))["charges"] == 1
    for path in (f"/v1/payments/{key}", f"/v1/payments/orders/{oid}"):
        got = await pg.get(path)
        assert got.status_code == 200
        assert got.json() == p


async def test_decline_card_0002(pg: httpx.AsyncClient) -> None:
    key, oid = await authorize(pg, card="4330-1234-1234-0002")
    r = await confirm(pg, key, oid)
    assert r.status_code == 403
    assert r.json()["code"] == "REJECT_CARD_PAYMENT"
    assert r.json()["message"]
    p = (await pg.get(f"/v1/payments/orders/{oid}")).json()
    assert p["status"] == "ABORTED"
    assert p["failure"]["code"] == "REJECT_CARD_PAYMENT"
    # The outcome of a payment key is final: confirming again declines again.
    again = await confirm(pg, key, oid)
    assert again.status_code == 403
    assert again.json()["code"] == "REJECT_CARD_PAYMENT"
    assert (await charges(pg, oid))["charges"] == 0


async def test_lost_response_card_0009_is_approved_but_the_answer_never_arrives(
    pg: httpx.AsyncClient,
) -> None:
    key, oid = await authorize(pg, card="4330123412340009")
    with pytest.raises(httpx.TransportError):
        await confirm(pg, key, oid, idem="lost-1")
    p = (await pg.get(f"/v1/payments/orders/{oid}")).json()
    assert p["status"] == "DONE"
    assert p["paymentKey"] == key
    assert (await charges(pg, oid))["charges"] == 1
    # The same Idempotency-Key gets the stored answer (now delivered), not a second charge.
    replay = await confirm(pg, key, oid, idem="lost-1")
    assert replay.status_code == 200
    assert replay.json()["status"] == "DONE"
    assert replay.headers["Idempotent-Replayed"] == "true"
    # Another key: the payment is already processed.
    other = await confirm(pg, key, oid, idem="lost-2")
    assert other.status_code == 400
    assert other.json()["code"] == "ALREADY_PROCESSED_PAYMENT"
    assert (await charges(pg, oid))["charges"] == 1


async def test_hang_mode_is_a_read_timeout(pg: httpx.AsyncClient) -> None:
    r = await pg.put("/v1/sandbox/config", json={"lost_response_mode": "hang", "hang_seconds": 3})
    assert r.status_code == 200
    assert r.json()["lost_response_mode"] == "hang"
    key, oid = await authorize(pg, card="4330123412340009")
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        await pg.post(
            "/v1/payments/confirm",
            json={"paymentKey": key, "orderId": oid, "amount": 189000},
            timeout=httpx.Timeout(5, read=0.5),
        )
    assert time.monotonic() - started < 2.5
    assert (await pg.get(f"/v1/payments/{key}")).json()["status"] == "DONE"
    assert (await charges(pg, oid))["charges"] == 1


async def test_amount_or_order_mismatch_is_rejected_and_nothing_charged(
    pg: httpx.AsyncClient,
) -> None:
    key, oid = await authorize(pg)
    r = await confirm(pg, key, oid, amount=1000)
    assert r.status_code == 400
    assert r.json()["code"] == "INVALID_REQUEST"
    r = await confirm(pg, key, order_id())
    assert r.status_code == 400
    assert r.json()["code"] == "INVALID_REQUEST"
    assert (await charges(pg, oid))["charges"] == 0
    assert (await pg.get(f"/v1/payments/{key}")).json()["status"] == "READY"
    # Still payable with the right amount.
    assert (await confirm(pg, key, oid)).status_code == 200


async def test_double_confirm_is_already_processed(pg: httpx.AsyncClient) -> None:
    key, oid = await authorize(pg)
    assert (await confirm(pg, key, oid, idem="a")).status_code == 200
    r = await confirm(pg, key, oid, idem="b")
    assert r.status_code == 400
    assert r.json()["code"] == "ALREADY_PROCESSED_PAYMENT"
    r = await confirm(pg, key, oid)
    assert r.status_code == 400
    assert r.json()["code"] == "ALREADY_PROCESSED_PAYMENT"
    assert (await charges(pg, oid))["charges"] == 1


async def test_concurrent_confirms_charge_once(pg: httpx.AsyncClient) -> None:
    key, oid = await authorize(pg)
    results = await asyncio.gather(*(confirm(pg, key, oid, idem=f"k{i}") for i in range(100)))
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(200) == 1, statuses
    assert all(
        r.json()["code"] == "ALREADY_PROCESSED_PAYMENT" for r in results if r.status_code != 200
    )
    assert (await charges(pg, oid))["charges"] == 1


async def test_concurrent_same_idempotency_key_charges_once(pg: httpx.AsyncClient) -> None:
    key, oid = await authorize(pg)
    results = await asyncio.gather(*(confirm(pg, key, oid, idem="same") for _ in range(100)))
    for r in results:
        assert r.status_code in (200, 409), r.text
        if r.status_code == 200:
            assert r.json()["status"] == "DONE"
        else:
            assert r.json()["code"] == "IDEMPOTENT_REQUEST_PROCESSING"
    assert any(r.status_code == 200 for r in results)
    assert (await charges(pg, oid))["charges"] == 1
    first = next(r.json() for r in results if r.status_code == 200)
    assert (await confirm(pg, key, oid, idem="same")).json() == first


async def test_second_authorization_of_a_paid_order_is_refused(pg: httpx.AsyncClient) -> None:
    key, oid = await authorize(pg)
    r = await pg.post(
        "/v1/sandbox/authorizations",
        json={"order_id": oid, "amount": 189000, "card_number": "4330123412340000"},
    )
    assert r.status_code == 200
    other_key = r.json()["payment_key"]
    assert (await confirm(pg, key, oid)).status_code == 200
    # The other session of the same order can no longer be charged.
    dup = await confirm(pg, other_key, oid)
    assert dup.status_code == 400
    assert dup.json()["code"] == "DUPLICATED_ORDER_ID"
    again = await pg.post(
        "/v1/sandbox/authorizations",
        json={"order_id": oid, "amount": 189000, "card_number": "4330123412340000"},
    )
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")
    assert again.json()["code"] == "order_already_paid"
    assert (await charges(pg, oid))["charges"] == 1
    assert (await pg.get(f"/v1/payments/orders/{oid}")).json()["paymentKey"] == key


async def test_cancel_refunds_in_full_once(pg: httpx.AsyncClient) -> None:
    key, oid = await authorize(pg)
    assert (await confirm(pg, key, oid)).status_code == 200
    r = await pg.post(
        f"/v1/payments/{key}/cancel",
        json={"cancelReason": "구매자 요청"},
        headers={"Idempotency-Key": "c1"},
    )
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["status"] == "CANCELED"
    assert p["balanceAmount"] == 0
    [c] = p["cancels"]
    assert c["cancelAmount"] == 189000
    assert c["cancelReason"] == "구매자 요청"
    assert c["refundableAmount"] == 0
    assert KST_RE.match(c["canceledAt"])
    replay = await pg.post(
        f"/v1/payments/{key}/cancel",
        json={"cancelReason": "구매자 요청"},
        headers={"Idempotency-Key": "c1"},
    )
    assert replay.status_code == 200
    assert replay.json() == p
    again = await pg.post(f"/v1/payments/{key}/cancel", json={"cancelReason": "again"})
    assert again.status_code == 400
    assert again.json()["code"] == "ALREADY_CANCELED_PAYMENT"
    counts = await charges(pg, oid)
    assert counts["charges"] == 1
    assert counts["refunds"] == 1
    assert counts["refunded_amount"] == 189000


async def test_partial_cancels(pg: httpx.AsyncClient) -> None:
    key, oid = await authorize(pg, amount=10000)
    assert (await confirm(pg, key, oid, amount=10000)).status_code == 200
    r = await pg.post(
        f"/v1/payments/{key}/cancel", json={"cancelReason": "part", "cancelAmount": 3000}
    )
    assert r.json()["status"] == "PARTIAL_CANCELED"
    assert r.json()["balanceAmount"] == 7000
    too_much = await pg.post(
        f"/v1/payments/{key}/cancel", json={"cancelReason": "part", "cancelAmount": 7001}
    )
    assert too_much.status_code == 403
    assert too_much.json()["code"] == "NOT_CANCELABLE_AMOUNT"
    rest = await pg.post(f"/v1/payments/{key}/cancel", json={"cancelReason": "rest"})
    assert rest.json()["status"] == "CANCELED"
    assert [c["cancelAmount"] for c in rest.json()["cancels"]] == [3000, 7000]


async def test_cancel_of_an_unpaid_payment_is_refused(pg: httpx.AsyncClient) -> None:
    key, _ = await authorize(pg)
    r = await pg.post(f"/v1/payments/{key}/cancel", json={"cancelReason": "x"})
    assert r.status_code == 403
    assert r.json()["code"] == "NOT_CANCELABLE_PAYMENT"
    r = await pg.post("/v1/payments/nope/cancel", json={"cancelReason": "x"})
    assert r.status_code == 404
    assert r.json()["code"] == "NOT_FOUND_PAYMENT"


async def test_bad_or_missing_secret_key_is_401(sandbox: SandboxServer) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        for headers in (
            {},
            basic("test_sk_wrong"),
            {"Authorization": "Basic !!!notbase64"},
            {"Authorization": "Bearer x"},
            # The secret without the trailing colon is not the Toss form.
            {"Authorization": "Basic dGVzdF9za19zYW5kYm94X3BnX3Rlc3Rz"},
        ):
            for method, path in (
                ("POST", "/v1/payments/confirm"),
                ("GET", "/v1/payments/x"),
                ("GET", "/v1/payments/orders/x"),
                ("POST", "/v1/payments/x/cancel"),
            ):
                r = await client.request(method, path, json={}, headers=headers)
                assert r.status_code == 401, (headers, path, r.text)
                assert r.json()["code"] == "UNAUTHORIZED_KEY"
            admin = await client.get("/v1/sandbox/config", headers=headers)
            assert admin.status_code == 401
            assert admin.headers["content-type"].startswith("application/problem+json")


async def test_latency_knob(pg: httpx.AsyncClient) -> None:
    key, oid = await authorize(pg)
    r = await pg.put("/v1/sandbox/config", json={"latency_ms": 300, "latency_jitter_ms": 100})
    assert r.json()["latency_ms"] == 300
    started = time.monotonic()
    assert (await pg.get(f"/v1/payments/{key}")).status_code == 200
    slow = time.monotonic() - started
    assert slow >= 0.3
    assert (await pg.delete("/v1/sandbox/config")).json()["latency_ms"] == 0
    started = time.monotonic()
    assert (await pg.get(f"/v1/payments/orders/{oid}")).status_code == 200
    assert time.monotonic() - started < 0.25


async def test_decline_rate_knob(pg: httpx.AsyncClient) -> None:
    await pg.put("/v1/sandbox/config", json={"decline_rate": 1.0})
    key, oid = await authorize(pg)
    r = await confirm(pg, key, oid)
    assert r.status_code == 403
    assert r.json()["code"] == "REJECT_CARD_PAYMENT"
    await pg.put("/v1/sandbox/config", json={"decline_rate": 0.5})
    outcomes = []
    for _ in range(40):
        key, oid = await authorize(pg)
        outcomes.append((await confirm(pg, key, oid)).status_code)
    assert 200 in outcomes
    assert 403 in outcomes
    assert set(outcomes) == {200, 403}


async def test_lost_response_rate_knob(pg: httpx.AsyncClient) -> None:
    await pg.put("/v1/sandbox/config", json={"lost_response_rate": 1.0})
    key, oid = await authorize(pg)
    with pytest.raises(httpx.TransportError):
        await confirm(pg, key, oid)
    assert (await charges(pg, oid))["charges"] == 1


async def test_error_rate_knob_does_nothing_and_frees_the_key(pg: httpx.AsyncClient) -> None:
    await pg.put("/v1/sandbox/config", json={"error_rate": 1.0})
    key, oid = await authorize(pg)
    r = await confirm(pg, key, oid, idem="e1")
    assert r.status_code == 500
    assert r.json()["code"] == "FAILED_INTERNAL_SYSTEM_PROCESSING"
    assert (await charges(pg, oid))["charges"] == 0
    await pg.delete("/v1/sandbox/config")
    # A 5xx is not stored: the same key runs again.
    assert (await confirm(pg, key, oid, idem="e1")).status_code == 200


async def test_bad_knobs_are_422(pg: httpx.AsyncClient) -> None:
    for body in (
        {"decline_rate": 2},
        {"latency_ms": -1},
        {"lost_response_mode": "explode"},
        {"unknown": 1},
        [],
    ):
        r = await pg.put("/v1/sandbox/config", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["code"] == "validation_error"
    assert (await pg.get("/v1/sandbox/config")).json()["decline_rate"] == 0


async def test_webhook_after_status_changes(
    pg: httpx.AsyncClient, webhooks: WebhookReceiver
) -> None:
    key, oid = await authorize(pg)
    assert (await confirm(pg, key, oid)).status_code == 200
    event = await webhooks.wait_for(
        lambda e: e["data"]["paymentKey"] == key and e["data"]["status"] == "DONE"
    )
    assert event["eventType"] == "PAYMENT_STATUS_CHANGED"
    assert event["createdAt"]
    await pg.post(f"/v1/payments/{key}/cancel", json={"cancelReason": "x"})
    await webhooks.wait_for(
        lambda e: e["data"]["paymentKey"] == key and e["data"]["status"] == "CANCELED"
    )


BAD_CONFIRM_BODIES: list[Any] = [
    None,
    "",
    "[]",
    "null",
    "{",
    '"x"',
    "{}",
    '{"paymentKey": 1, "orderId": "order_1234", "amount": 1}',
    '{"paymentKey": "k", "orderId": "order_1234", "amount": "lots"}',
    '{"paymentKey": "k", "orderId": "order_1234", "amount": true}',
    '{"paymentKey": "k", "orderId": "order_1234", "amount": -5}',
    '{"paymentKey": "k", "orderId": "order_1234", "amount": 1.5}',
    '{"paymentKey": "k", "orderId": "order_1234", "amount": 1e30}',
    '{"paymentKey": "k", "orderId": "short", "amount": 1}',
    '{"paymentKey": "k", "orderId": "bad/../id!", "amount": 1}',
    '{"paymentKey": "", "orderId": "order_1234", "amount": 1}',
    '{"paymentKey": "k", "orderId": "' + "o" * 65 + '", "amount": 1}',
    '{"paymentKey": "' + "k" * 201 + '", "orderId": "order_1234", "amount": 1}',
    b"\xff\xfe\x00",
]


@pytest.mark.parametrize("body", BAD_CONFIRM_BODIES)
async def test_bad_confirm_input_is_a_toss_400(pg: httpx.AsyncClient, body: Any) -> None:
    r = await pg.post(
        "/v1/payments/confirm", content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "INVALID_REQUEST"
    assert r.json()["message"]


async def test_bad_cancel_input_and_idempotency_key(pg: httpx.AsyncClient) -> None:
    key, oid = await authorize(pg)
    assert (await confirm(pg, key, oid)).status_code == 200
    for body in (
        {},
        {"cancelReason": ""},
        {"cancelReason": "x" * 201},
        {"cancelReason": "x", "cancelAmount": 0},
        {"cancelReason": "x", "cancelAmount": "all"},
        {"cancelReason": "x", "cancelAmount": False},
        {"cancelReason": 5},
    ):
        r = await pg.post(f"/v1/payments/{key}/cancel", json=body)
        assert (r.status_code, r.json()["code"]) == (400, "INVALID_REQUEST"), (body, r.text)
    r = await pg.post(
        f"/v1/payments/{key}/cancel",
        json={"cancelReason": "x"},
        headers={"Idempotency-Key": "k" * 301},
    )
    assert r.status_code == 400
    assert r.json()["code"] == "INVALID_REQUEST"
    assert (await pg.get(f"/v1/payments/{key}")).json()["status"] == "DONE"


async def test_unknown_payment_lookups_are_404(pg: httpx.AsyncClient) -> None:
    for path in ("/v1/payments/nope", "/v1/payments/orders/" + order_id(), "/v1/payments/%2F.."):
        r = await pg.get(path)
        assert r.status_code == 404, (path, r.text)
    r = await confirm(pg, "nope", order_id(), amount=1)
    assert r.status_code == 404
    assert r.json()["code"] == "NOT_FOUND_PAYMENT_SESSION"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"order_id": "ord_123456", "amount": 1000},
        {"order_id": "ord_123456", "amount": 1000, "card_number": "1234"},
        {"order_id": "ord_123456", "amount": 1000, "card_number": "4330abcd12340000"},
        {"order_id": "x", "amount": 1000, "card_number": "4330123412340000"},
        {"order_id": "ord_123456", "amount": 0, "card_number": "4330123412340000"},
        {"order_id": "ord_123456", "amount": "1000", "card_number": "4330123412340000"},
        {"order_id": "ord_123456", "amount": True, "card_number": "4330123412340000"},
        {"order_id": "ord_123456", "amount": 1000, "card_number": "4330123412340000", "x": 1},
    ],
)
async def test_bad_authorization_input_is_problem_json(
    pg: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    r = await pg.post("/v1/sandbox/authorizations", json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] in ("validation_error", "invalid_card_number")


async def test_malformed_authorization_json_is_400(pg: httpx.AsyncClient) -> None:
    r = await pg.post(
        "/v1/sandbox/authorizations", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_json"
