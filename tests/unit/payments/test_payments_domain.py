"""Pure payment rules: ids, PG idempotency keys, backoff, rendering, confirm answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snapshoe.kernel.clock import to_db as as_utc_naive
from snapshoe.kernel.errors import Problem
from snapshoe.payments.domain import (
    MAX_BACKOFF_SECONDS,
    Payment,
    Status,
    backoff,
    confirm_idempotency_key,
    new_payment_id,
    refund_idempotency_key,
    rfc3339,
)
from snapshoe.payments.handlers import answer


def _payment(status: Status, **kw: object) -> Payment:
    now = datetime(2025, 1, 1, 12, 0, 0)
    values: dict[str, object] = {
        "id": "pay_x",
        "order_id": "ord_x",
        "buyer_id": "u1",
        "payment_key": "k",
        "amount": 1000,
        "status": status,
        "pg_code": None,
        "pg_message": None,
        "approved_at": None,
        "canceled_at": None,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
        **kw,
    }
    return Payment(**values)  # type: ignore[arg-type]


def test_payment_ids_are_unguessable_and_distinct() -> None:
    ids = {new_payment_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("pay_") and len(i) >= 24 for i in ids)


def test_pg_idempotency_keys_are_derived_from_our_ids() -> None:
    assert confirm_idempotency_key("pay_a") == confirm_idempotency_key("pay_a")
    assert confirm_idempotency_key("pay_a") != confirm_idempotency_key("pay_b")
    assert refund_idempotency_key("rf_a") != confirm_idempotency_key("rf_a")
    assert len(confirm_idempotency_key("pay_" + "x" * 22)) <= 300  # Toss's limit


@given(st.integers(min_value=0, max_value=10_000))
def test_backoff_grows_and_is_capped(attempts: int) -> None:
    wait = backoff(attempts)
    assert timedelta(seconds=1) <= wait <= timedelta(seconds=MAX_BACKOFF_SECONDS)
    assert backoff(attempts + 1) >= wait


def test_times_render_as_utc_with_z() -> None:
    kst = timezone(timedelta(hours=9))
    aware = datetime(2025, 1, 1, 9, 0, 0, tzinfo=kst)
    assert as_utc_naive(aware) == datetime(2025, 1, 1, 0, 0, 0)
    assert rfc3339(aware) == "2025-01-01T00:00:00.000000Z"
    assert rfc3339(datetime(2025, 1, 1, tzinfo=UTC)) == "2025-01-01T00:00:00.000000Z"
    assert rfc3339(None) is None


def test_confirm_answer_per_status() -> None:
    assert answer(_payment(Status.DONE))[0] == 200
    assert answer(_payment(Status.UNKNOWN)) == (202, _payment(Status.UNKNOWN).view())
    assert answer(_payment(Status.IN_PROGRESS))[0] == 202
    with pytest.raises(Problem) as declined:
        answer(_payment(Status.ABORTED, pg_code="REJECT_CARD_PAYMENT", pg_message="no"))
    assert (declined.value.status, declined.value.code) == (402, "payment_declined")
    assert declined.value.extra["pg_code"] == "REJECT_CARD_PAYMENT"
    with pytest.raises(Problem) as refunded:
        answer(_payment(Status.CANCELED))
    assert (refunded.value.status, refunded.value.code) == (409, "invalid_state")


def test_view_shows_failure_only_when_aborted() -> None:
    aborted = _payment(Status.ABORTED, pg_code="X", pg_message="m").view()
    assert aborted["failure"] == {"code": "X", "message": "m"}
    assert _payment(Status.DONE, pg_code="X").view()["failure"] is None
    assert "buyer_id" not in aborted  # the buyer knows who they are; nothing else leaks
