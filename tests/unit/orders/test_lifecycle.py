"""The lifecycle worker's pure parts: which steps exist, the events it writes, the claim query,
the clock and the lag arithmetic."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from sqlalchemy.dialects import mysql

from snapshoe.kernel.clock import ManualClock, SystemClock
from snapshoe.orders.domain import Status
from snapshoe.orders.lifecycle import (
    DELIVER,
    EVENT_NAMESPACE,
    EXPIRE,
    SHIP,
    STEPS,
    DueStatus,
    Step,
    due_query,
    event_id,
    message_template,
)
from snapshoe.orders.settings import LifecycleSettings

NOW = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def test_steps_are_the_issue_s_three_and_final_states_never_advance() -> None:
    assert [(s.source, s.target) for s in STEPS] == [
        (Status.PENDING_PAYMENT, Status.EXPIRED),
        (Status.PREPARING, Status.SHIPPING),
        (Status.SHIPPING, Status.DELIVERED),
    ]
    final = {Status.CANCELLED, Status.PAYMENT_FAILED, Status.EXPIRED, Status.DELIVERED}
    assert final.isdisjoint(s.source for s in STEPS)
    # Only shipping schedules another step; expiry hands the pairs back through the intent.
    assert [s.schedules_next for s in STEPS] == [False, True, False]
    assert EXPIRE.sets_stock == "RELEASING"
    assert SHIP.requires_stock == "COMMITTED"


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.kind)
def test_event_id_is_the_uuid5_of_order_and_event_type(step: Step) -> None:
    for oid in ["a", "ord1", "-x_", "é", *(secrets.token_urlsafe(16) for _ in range(2000))]:
        assert event_id(oid, step) == str(uuid.uuid5(EVENT_NAMESPACE, f"{oid}/{step.event.TYPE}"))


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.kind)
def test_message_template_is_the_contract_s_message_with_blank_order_fields(step: Step) -> None:
    template = orjson.loads(message_template(step, NOW))
    filled = {**template, "order_id": "o1", "buyer_id": "b1", "event_id": event_id("o1", step)}
    assert (
        filled
        == step.event(
            order_id="o1",
            buyer_id="b1",
            event_id=event_id("o1", step),
            occurred_at=NOW,
        ).to_message()
    )


def test_event_ids_are_stable_per_order_and_step_and_distinct_otherwise() -> None:
    assert event_id("a", SHIP) == event_id("a", SHIP)
    ids = {event_id(o, s) for o in ("a", "b") for s in STEPS}
    assert len(ids) == 6
    assert all(len(i) == 36 for i in ids)  # fits outbox.event_id / inbox.event_id


def test_claim_query_uses_the_due_range_and_skips_locked_rows() -> None:
    for step in STEPS:
        sql = str(
            due_query(step, NOW, 500).compile(
                dialect=mysql.dialect(), compile_kwargs={"literal_binds": True}
            )
        )
        assert f"orders.status = '{step.source.value}'" in sql
        assert "orders.next_transition_at <= '2025-03-01 12:00:00.123456'" in sql
        assert "ORDER BY orders.next_transition_at" in sql
        assert sql.endswith("LIMIT 500 FOR UPDATE SKIP LOCKED")
        assert ("stock_state = 'COMMITTED'" in sql) == (step is SHIP)
    assert DELIVER.requires_stock is None


def test_manual_clock_jumps_and_system_clock_is_utc() -> None:
    clock = ManualClock(datetime(2025, 1, 1))  # naive means UTC
    assert clock.now() == datetime(2025, 1, 1, tzinfo=UTC)
    assert clock.advance(86_400) == datetime(2025, 1, 2, tzinfo=UTC)
    assert clock.advance(timedelta(minutes=1)) == datetime(2025, 1, 2, 0, 1, tzinfo=UTC)
    clock.set(NOW)
    assert clock.now() == NOW
    assert SystemClock().now().tzinfo is UTC


def test_lag_is_how_late_the_oldest_due_order_is() -> None:
    assert DueStatus(Status.PREPARING, 0, None).lag_seconds(NOW) == 0.0
    late = DueStatus(Status.PREPARING, 3, NOW - timedelta(seconds=90))
    assert late.lag_seconds(NOW) == 90.0
    assert DueStatus(Status.SHIPPING, 0, NOW + timedelta(seconds=5)).lag_seconds(NOW) == 0.0


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert LifecycleSettings().metrics_port == 0  # no endpoint unless asked for
    monkeypatch.setenv("SNAPSHOE_ORDERS_LIFECYCLE_BATCH_SIZE", "250")
    monkeypatch.setenv("SNAPSHOE_ORDERS_LIFECYCLE_METRICS_PORT", "9310")
    lc = LifecycleSettings()
    assert (lc.batch_size, lc.metrics_port) == (250, 9310)
    monkeypatch.setenv("SNAPSHOE_ORDERS_LIFECYCLE_BATCH_SIZE", "0")
    with pytest.raises(ValueError, match="batch_size"):
        LifecycleSettings()
