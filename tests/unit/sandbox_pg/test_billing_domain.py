"""The sandbox PG's billing-key rules (pure): masks, fingerprints, expiry, the checks a charge
passes, the Toss-shaped billing answer, old stored payments."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snapshoe.sandbox_pg import domain
from snapshoe.sandbox_pg.domain import BillingKey, Payment, TossError

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC).timestamp()
SECRET = "test_sk_unit"


def billing(card: str = "4330123412340000", customer: str = "cust_1") -> BillingKey:
    return domain.issue_billing_key(SECRET, customer, card, "30", "07", NOW)


def test_the_mask_shows_the_first_eight_and_three_of_the_last_four() -> None:
    assert domain.mask_billing_card("4330123412341234") == "43301234****123*"
    assert domain.mask_billing_card("433012341234") == "43301234123*"
    assert domain.mask_billing_card("4330123412345678901") == "43301234*******890*"


@given(st.from_regex(r"\A[0-9]{12,19}\Z"))
def test_the_mask_keeps_the_length_and_hides_the_rest(card: str) -> None:
    masked = domain.mask_billing_card(card)
    assert len(masked) == len(card)
    assert masked.count("*") == len(card) - 11
    assert masked[:8] == card[:8]
    assert masked[-4:-1] == card[-4:-1]


def test_fingerprint_is_the_card_not_the_customer_and_keyed() -> None:
    a = billing(customer="alice")
    b = billing(customer="bob")
    assert a.billing_key != b.billing_key
    assert a.fingerprint == b.fingerprint
    assert re.fullmatch(r"[0-9a-f]{64}", a.fingerprint)
    assert billing(card="4330123412340002").fingerprint != a.fingerprint
    # Another sandbox (another secret) gives another fingerprint; a bare hash of the number
    # (which anyone could compute for every card number) is not what is published.
    assert domain.card_fingerprint("other", "4330123412340000") != a.fingerprint
    assert a.fingerprint != hashlib.sha256(b"4330123412340000").hexdigest()


def test_billing_keys_look_like_tosss_and_never_repeat() -> None:
    keys = {domain.new_billing_key() for _ in range(500)}
    assert len(keys) == 500
    assert all(len(k) == 44 and re.fullmatch(r"[A-Za-z0-9_-]{43}=", k) for k in keys)


@pytest.mark.parametrize(
    ("year", "month", "expired"),
    [("26", "12", False), ("26", "11", True), ("27", "01", False), ("25", "12", True),
     ("99", "01", False), ("00", "01", True)],
)  # fmt: skip
def test_a_card_is_valid_through_its_expiration_month(year: str, month: str, expired: bool) -> None:
    assert domain.card_expired(year, month, NOW) is expired


def test_an_expired_card_is_not_registered() -> None:
    with pytest.raises(TossError) as e:
        domain.issue_billing_key(SECRET, "cust_1", "4330123412340000", "26", "11", NOW)
    assert (e.value.status, e.value.code) == (400, "INVALID_CARD_EXPIRATION")


def test_check_billing() -> None:
    b = billing(customer="alice")
    assert domain.check_billing(b, "alice") is b
    with pytest.raises(TossError) as e:
        domain.check_billing(b, "bob")
    assert (e.value.status, e.value.code) == (400, "NOT_MATCHES_CUSTOMER_KEY")
    with pytest.raises(TossError) as e:
        domain.check_billing(None, "alice")
    assert (e.value.status, e.value.code) == (400, "INVALID_BILL_KEY_REQUEST")


def test_a_billing_payment_is_a_new_billing_type_payment_of_the_card() -> None:
    b = billing(card="4330123412340009")
    p = domain.billing_payment(b, "ord_123456", 5000, "Air Max 1", NOW)
    q = domain.billing_payment(b, "ord_123457", 5000, "Air Max 1", NOW)
    assert p.payment_key != q.payment_key
    assert p.card_number == "4330123412340009"
    assert p.type == "BILLING"
    assert (p.amount, p.balance, p.status) == (5000, 5000, domain.Status.READY)
    domain.approve(p, NOW + 1)
    body = domain.to_toss(p)
    assert body["type"] == "BILLING"
    assert body["method"] == "카드"
    assert body["status"] == "DONE"


def test_toss_billing_answer() -> None:
    b = billing()
    body = domain.to_toss_billing(b)
    assert set(body) == {
        "mId", "customerKey", "authenticatedAt", "method", "billingKey", "cardCompany",
        "cardNumber", "card",
    }  # fmt: skip
    assert body["customerKey"] == "cust_1"
    assert body["billingKey"] == b.billing_key
    assert body["method"] == "카드"
    assert body["authenticatedAt"] == "2026-12-04T21:00:00+09:00"
    assert body["cardNumber"] == body["card"]["number"] == "43301234****000*"
    assert body["card"]["fingerprint"] == b.fingerprint
    assert "4330123412340000" not in str(body)
    assert BillingKey.from_dict(b.to_dict()) == b


def test_a_payment_stored_before_billing_reads_as_normal() -> None:
    p = domain.authorize("ord_123456", 1000, "4330123412340000", "x", NOW)
    data = p.to_dict()
    del data["type"]
    old = Payment.from_dict(data)
    assert old.type == "NORMAL"
    assert domain.to_toss(old)["type"] == "NORMAL"
