"""Pure rules of billing payments: which PG payment is ours before we know its key, the PG
Idempotency-Key, the internal charge's status, and the adapter's billing requests and answers
(a fake aiohttp session, as test_pg_client.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pytest
from tests.unit.payments.fake_pg_http import Answer, FakeSession, Sent, answer

from snapshoe.payments.billing import fallback_fingerprint
from snapshoe.payments.domain import (
    CHARGE_STATUS,
    Method,
    Payment,
    Status,
    billing_idempotency_key,
    confirm_idempotency_key,
)
from snapshoe.payments.pg import PgDeclined, PgError, PgStatus, TossPaymentsClient


def _payment(**kw: Any) -> Payment:
    now = datetime(2026, 1, 1, 12, 0, 0)
    values: dict[str, Any] = {
        "id": "pay_x",
        "order_id": "ord_123456",
        "buyer_id": "u1",
        "payment_key": "",
        "amount": 1000,
        "status": Status.IN_PROGRESS,
        "pg_code": None,
        "pg_message": None,
        "approved_at": None,
        "canceled_at": None,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
        "method": Method.BILLING,
        "billing_key": "bk",
        "order_name": "Air Max 1",
    }
    values.update(kw)
    return Payment(**values)


def test_a_billing_payment_without_its_key_is_known_by_order_and_amount() -> None:
    p = _payment()
    assert not p.key_known
    assert p.matches("any-key", "ord_123456", 1000)
    assert not p.matches("any-key", "ord_other1", 1000)
    assert not p.matches("any-key", "ord_123456", 999)


def test_once_its_key_is_known_only_that_key_is_it() -> None:
    p = _payment(payment_key="pk1")
    assert p.key_known
    assert p.matches("pk1", "ord_123456", 1000)
    assert not p.matches("pk2", "ord_123456", 1000)
    assert not p.matches("pk1", "ord_other1", 1000)


def test_a_confirm_payment_is_never_matched_without_its_key() -> None:
    confirm = _payment(method=Method.CONFIRM, payment_key="", billing_key=None)
    assert not confirm.matches("any-key", "ord_123456", 1000)


def test_the_billing_idempotency_key_is_the_payment_s_own_and_not_confirm_s() -> None:
    assert billing_idempotency_key("pay_x") == billing_idempotency_key("pay_x")
    assert billing_idempotency_key("pay_x") != billing_idempotency_key("pay_y")
    assert billing_idempotency_key("pay_x") != confirm_idempotency_key("pay_x")
    assert len(billing_idempotency_key("pay_" + "x" * 28)) <= 300  # Toss's limit


def test_every_status_has_a_charge_status() -> None:
    assert set(CHARGE_STATUS) == set(Status)
    assert CHARGE_STATUS[Status.ABORTED] == "FAILED"
    assert CHARGE_STATUS[Status.DONE] == "DONE"


def test_fallback_fingerprint_is_stable_and_distinct() -> None:
    assert fallback_fingerprint("43301234****123*") == fallback_fingerprint("43301234****123*")
    assert fallback_fingerprint("43301234****123*") != fallback_fingerprint("43301234****124*")


# --- the adapter's billing requests ---

TOSS_BILLING: dict[str, Any] = {  # as docs.tosspayments.com shows the issue answer
    "mId": "tosspayments",
    "customerKey": "6uSA0QJetFsw-NQoHRaH8",
    "authenticatedAt": "2021-01-01T10:01:30+09:00",
    "method": "카드",
    "billingKey": "lWd2ICDZVc-C2K82ubzX_179q2I8kxIlk4EqDgoBXzE=",
    "cardCompany": "현대",
    "cardNumber": "43301234****123*",
    "card": {"issuerCode": "61", "number": "43301234****123*", "cardType": "신용"},
}


def _client(handler: Any) -> TossPaymentsClient:
    return TossPaymentsClient("http://pg", "sk", http=FakeSession(handler).session())


async def test_charge_request_shape_and_duplicate_read_back() -> None:
    seen: list[Sent] = []
    done = {
        "paymentKey": "pk_1",
        "orderId": "ord_123456",
        "status": "DONE",
        "totalAmount": 1000,
        "balanceAmount": 1000,
    }

    def handler(request: Sent) -> Answer:
        seen.append(request)
        if request.method == "POST":
            return answer(400, {"code": "DUPLICATED_ORDER_ID", "message": "이미 승인"})
        return answer(200, done)

    pg = _client(handler)
    p = await pg.charge_billing_key("a/b=", "cust", 1000, "ord_123456", "Air Max", "idem-1")
    assert p.status is PgStatus.DONE
    post, get = seen
    # The billing key is one path segment, whatever it holds.
    assert post.url.raw_path == "/v1/billing/a%2Fb%3D"
    assert post.headers["Idempotency-Key"] == "idem-1"
    assert orjson.loads(post.content) == {
        "customerKey": "cust",
        "amount": 1000,
        "orderId": "ord_123456",
        "orderName": "Air Max",
    }
    assert get.url.path == "/v1/payments/orders/ord_123456"
    # A duplicate whose payment is not this charge (another amount) stays a decline.
    done["totalAmount"] = 999
    with pytest.raises(PgDeclined) as info:
        await pg.charge_billing_key("bk", "cust", 1000, "ord_123456", "Air Max", "idem-2")
    assert info.value.code == "DUPLICATED_ORDER_ID"


async def test_a_toss_billing_answer_without_fingerprint_parses() -> None:
    pg = _client(lambda request: answer(200, TOSS_BILLING))
    b = await pg.get_billing_key(TOSS_BILLING["billingKey"])
    assert b.billing_key == TOSS_BILLING["billingKey"]
    assert b.customer_key == "6uSA0QJetFsw-NQoHRaH8"
    assert b.card_number == "43301234****123*"
    assert b.fingerprint is None


async def test_a_billing_answer_without_its_key_is_an_error() -> None:
    pg = _client(lambda request: answer(200, {"mId": "x"}))
    with pytest.raises(PgError) as info:
        await pg.get_billing_key("bk")
    assert info.value.code == "INVALID_RESPONSE"
