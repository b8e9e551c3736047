"""The money rules of the settle checker (bench.settle_checks.money_anomalies): each way money
can be lost or kept wrongly is named, and every sound case passes."""

from __future__ import annotations

import pytest

from snapshoe.bench.settle_checks import OrderMoney, money_anomalies

TOTAL = 150_000


def order(status: str, charges: int = 0, charged: int = 0, refunds: int = 0, refunded: int = 0):
    return OrderMoney("o1", status, TOTAL, charges, charged, refunds, refunded)


@pytest.mark.parametrize(
    "o",
    [
        order("PREPARING", 1, TOTAL),
        order("SHIPPING", 1, TOTAL),
        order("DELIVERED", 1, TOTAL),
        order("PENDING_PAYMENT"),
        order("EXPIRED"),
        order("PAYMENT_FAILED"),
        order("CANCELLED"),  # cancelled before paying
        order("CANCELLED", 1, TOTAL, 1, TOTAL),  # paid, then refunded in full
        order("EXPIRED", 1, TOTAL, 1, TOTAL),  # approved late, after expiry: refunded
    ],
)
def test_sound_money_passes(o: OrderMoney) -> None:
    assert money_anomalies([o]) == []


@pytest.mark.parametrize(
    ("o", "named"),
    [
        (order("PREPARING"), "not charged exactly once"),  # shipped for free
        (order("PREPARING", 2, 2 * TOTAL), "not charged exactly once"),  # charged twice
        (order("PREPARING", 1, TOTAL // 2), "not charged exactly once"),
        (order("SHIPPING", 1, TOTAL, 1, TOTAL), "not charged exactly once"),  # refunded, shipped
        (order("EXPIRED", 1, TOTAL), "money kept without a paid order"),
        (order("PENDING_PAYMENT", 1, TOTAL), "money kept without a paid order"),
        (order("CANCELLED", 1, TOTAL, 1, TOTAL // 2), "money kept without a paid order"),
        (order("CANCELLED", 1, TOTAL, 2, TOTAL), "refunded more than once"),
        (order("CANCELLED", 1, TOTAL, 1, 2 * TOTAL), "more than charged"),
    ],
)
def test_each_way_of_losing_money_is_named(o: OrderMoney, named: str) -> None:
    found = money_anomalies([o])
    assert len(found) == 1
    assert named in found[0]["anomaly"]
    assert found[0]["evidence"]["order_id"] == "o1"


def test_only_the_bad_orders_are_named() -> None:
    good = [OrderMoney(f"g{n}", "PREPARING", TOTAL, 1, TOTAL, 0, 0) for n in range(50)]
    bad = OrderMoney("bad", "EXPIRED", TOTAL, 1, TOTAL, 0, 0)
    found = money_anomalies([*good[:25], bad, *good[25:]])
    assert [a["evidence"]["order_id"] for a in found] == ["bad"]
