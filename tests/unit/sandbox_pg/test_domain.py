"""The sandbox PG's pure rules: card outcomes, confirm checks, cancel arithmetic, Toss JSON."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snapshoe.sandbox_pg import domain
from snapshoe.sandbox_pg.domain import Outcome, Payment, Status, TossError

NOW = 1_700_000_000.0
TTL = 1800.0

# The top-level fields of the Toss Payment object (API version 2022-11-16).
TOSS_PAYMENT_FIELDS = {
    "mId", "lastTransactionKey", "paymentKey", "orderId", "orderName", "taxExemptionAmount",
    "status", "requestedAt", "approvedAt", "useEscrow", "cultureExpense", "card",
    "virtualAccount", "transfer", "mobilePhone", "giftCertificate", "cashReceipt",
    "cashReceipts", "discount", "cancels", "secret", "type", "easyPay", "country", "failure",
    "isPartialCancelable", "receipt", "checkout", "currency", "totalAmount", "balanceAmount",
    "suppliedAmount", "vat", "taxFreeAmount", "method", "version",
}  # fmt: skip


def payment(amount: int = 10000, card: str = "4330123412340000") -> Payment:
    return domain.authorize("ord_123456", amount, card, "Air Max 1", NOW)


def approved(amount: int = 10000) -> Payment:
    p = payment(amount)
    domain.approve(p, NOW + 1)
    return p


@given(
    card=st.from_regex(r"\A\d{8,15}\Z"),
    ending=st.sampled_from(["0000", "0002", "0009", "1234"]),
    decline_roll=st.floats(0, 1, exclude_max=True),
    lost_roll=st.floats(0, 1, exclude_max=True),
    decline_rate=st.floats(0, 1),
    lost_rate=st.floats(0, 1),
)
def test_card_outcome_rules(
    card: str,
    ending: str,
    decline_roll: float,
    lost_roll: float,
    decline_rate: float,
    lost_rate: float,
) -> None:
    number = card + ending
    outcome = domain.card_outcome(
        number,
        decline_roll=decline_roll,
        lost_roll=lost_roll,
        decline_rate=decline_rate,
        lost_rate=lost_rate,
    )
    if ending == "0002":
        assert outcome is Outcome.DECLINE
    elif ending == "0009":
        assert outcome is Outcome.APPROVE_LOST
    elif decline_roll < decline_rate:
        assert outcome is Outcome.DECLINE
    elif lost_roll < lost_rate:
        assert outcome is Outcome.APPROVE_LOST
    else:
        assert outcome is Outcome.APPROVE


def test_rates_of_zero_always_approve_a_0000_card() -> None:
    for roll in (0.0, 0.5, 0.999):
        assert (
            domain.card_outcome(
                "4330123412340000",
                decline_roll=roll,
                lost_roll=roll,
                decline_rate=0,
                lost_rate=0,
            )
            is Outcome.APPROVE
        )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("4330123412340000", "4330123412340000"),
        ("4330 1234 1234 0002", "4330123412340002"),
        ("4330-1234-1234-0009", "4330123412340009"),
        ("12345678901", None),
        ("12345678901234567890", None),
        ("4330abcd12340000", None),
        ("٤٣٣٠١٢٣٤١٢٣٤٠٠٠٠", None),  # non-ASCII digits are not card digits
        ("", None),
    ],
)
def test_normalize_card_number(raw: str, expected: str | None) -> None:
    assert domain.normalize_card_number(raw) == expected


@pytest.mark.parametrize(
    ("order_id", "ok"),
    [("ord_123456", True), ("a" * 64, True), ("a-b_c1", True), ("short", False),
     ("a" * 65, False), ("bad/id1", False), ("주문번호123456", False)],
)  # fmt: skip
def test_order_id_rule(order_id: str, ok: bool) -> None:
    assert domain.valid_order_id(order_id) is ok


def _code(exc: pytest.ExceptionInfo[TossError]) -> tuple[int, str]:
    return exc.value.status, exc.value.code


def test_check_confirm() -> None:
    p = payment()
    domain.check_confirm(p, "ord_123456", 10000, NOW + 10, TTL)  # fine
    with pytest.raises(TossError) as e:
        domain.check_confirm(p, "ord_other1", 10000, NOW, TTL)
    assert _code(e) == (400, "INVALID_REQUEST")
    with pytest.raises(TossError) as e:
        domain.check_confirm(p, "ord_123456", 9999, NOW, TTL)
    assert _code(e) == (400, "INVALID_REQUEST")
    with pytest.raises(TossError) as e:
        domain.check_confirm(p, "ord_123456", 10000, NOW + TTL + 1, TTL)
    assert _code(e) == (404, "NOT_FOUND_PAYMENT_SESSION")
    done = approved()
    with pytest.raises(TossError) as e:
        domain.check_confirm(done, "ord_123456", 10000, NOW, TTL)
    assert _code(e) == (400, "ALREADY_PROCESSED_PAYMENT")
    declined = payment()
    domain.decline(declined, domain.reject_card())
    assert declined.status is Status.ABORTED
    with pytest.raises(TossError) as e:
        domain.check_confirm(declined, "ord_123456", 10000, NOW, TTL)
    assert _code(e) == (403, "REJECT_CARD_PAYMENT")


@given(
    amount=st.integers(1, 10**7),
    parts=st.lists(st.integers(1, 10**7), max_size=8),
)
def test_cancels_never_refund_more_than_paid(amount: int, parts: list[int]) -> None:
    p = approved(amount)
    refunded = 0
    for part in parts:
        before = p.to_dict()
        try:
            entry = domain.cancel(p, "reason", part, NOW + 2)
        except TossError as exc:
            refused = exc.code
            assert p.to_dict() == before  # a refused cancel changes nothing
            assert refused in ("NOT_CANCELABLE_AMOUNT", "ALREADY_CANCELED_PAYMENT")
            continue
        refunded += entry.amount
        assert entry.refundable_after == p.balance
    assert p.balance == amount - refunded >= 0
    assert sum(c.amount for c in p.cancels) == refunded
    expected = {0: Status.DONE, amount: Status.CANCELED}.get(refunded, Status.PARTIAL_CANCELED)
    assert p.status is expected


def test_full_cancel_then_again() -> None:
    p = approved()
    entry = domain.cancel(p, "changed my mind", None, NOW + 5)
    assert entry.amount == 10000
    assert p.status is Status.CANCELED
    assert p.balance == 0
    with pytest.raises(TossError) as e:
        domain.cancel(p, "again", None, NOW + 6)
    assert _code(e) == (400, "ALREADY_CANCELED_PAYMENT")
    with pytest.raises(TossError) as e:
        domain.cancel(payment(), "not paid", None, NOW)
    assert _code(e) == (403, "NOT_CANCELABLE_PAYMENT")


def test_toss_json_shape() -> None:
    ready = domain.to_toss(payment())
    assert set(ready) == TOSS_PAYMENT_FIELDS
    assert ready["status"] == "READY"
    assert ready["card"] is None
    assert ready["approvedAt"] is None
    p = approved(189000)
    domain.cancel(p, "part", 89000, NOW + 60)
    body = domain.to_toss(p)
    assert set(body) == TOSS_PAYMENT_FIELDS
    assert body["status"] == "PARTIAL_CANCELED"
    assert body["totalAmount"] == 189000
    assert body["balanceAmount"] == 100000
    assert body["suppliedAmount"] + body["vat"] == 100000
    kst = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+09:00$")
    assert kst.match(body["requestedAt"])
    assert kst.match(body["approvedAt"])
    assert body["requestedAt"] == "2023-11-15T07:13:20+09:00"  # NOW in KST
    [c] = body["cancels"]
    assert c["cancelAmount"] == 89000
    assert c["refundableAmount"] == 100000
    assert c["transactionKey"] == body["lastTransactionKey"]
    assert body["card"]["number"] == "43301234****0000"


def test_payment_round_trips_through_its_dict() -> None:
    p = approved()
    domain.cancel(p, "part", 100, NOW + 3)
    assert Payment.from_dict(p.to_dict()) == p


def test_payment_keys_are_unguessable() -> None:
    keys = {domain.new_payment_key() for _ in range(1000)}
    assert len(keys) == 1000
    assert all(len(k) == 50 and k.isalnum() for k in keys)


def test_webhook_event() -> None:
    event = domain.webhook_event(approved(), NOW)
    assert event["eventType"] == "PAYMENT_STATUS_CHANGED"
    assert event["createdAt"].startswith("2023-11-15T07:13:20")
    assert event["data"]["status"] == "DONE"
