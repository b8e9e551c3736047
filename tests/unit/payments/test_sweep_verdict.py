"""The refund sweeper's rule (pure): which charges are money without an order."""

from __future__ import annotations

import pytest

from snapshoe.payments.domain import sweep_verdict


@pytest.mark.parametrize("status", ["PREPARING", "SHIPPING", "DELIVERED"])
def test_a_fulfilled_order_paid_by_this_payment_is_never_refunded(status: str) -> None:
    assert sweep_verdict({"status": status, "payment_id": "pay_1"}, "pay_1") == "fulfilled"
    assert sweep_verdict({"status": status, "payment_id": "pay_2"}, "pay_1") == "refund"
    assert sweep_verdict({"status": status, "payment_id": None}, "pay_1") == "refund"


@pytest.mark.parametrize("status", ["EXPIRED", "CANCELLED", "PAYMENT_FAILED"])
def test_an_order_that_cannot_be_fulfilled_is_refunded(status: str) -> None:
    assert sweep_verdict({"status": status, "payment_id": None}, "pay_1") == "refund"


def test_an_unknown_order_is_refunded_and_a_pending_one_waits() -> None:
    assert sweep_verdict(None, "pay_1") == "refund"
    assert sweep_verdict({"status": "PENDING_PAYMENT", "payment_id": None}, "pay_1") == "wait"
    assert sweep_verdict({"status": "SOMETHING_NEW"}, "pay_1") == "wait"
