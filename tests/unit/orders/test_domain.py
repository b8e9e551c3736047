"""Pure rules of the orders service: line merging, cursors, the create-order body."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from snapshoe.kernel.cursors import InvalidCursor
from snapshoe.orders.domain import (
    Line,
    decode_cursor,
    encode_cursor,
    merge_lines,
    new_order_id,
)
from snapshoe.orders.queries import optional_rfc3339 as rfc3339
from snapshoe.orders.schemas import CreateOrder


def test_merge_lines_adds_quantities_in_first_seen_order() -> None:
    merged = merge_lines([Line("b", 1), Line("a", 2), Line("b", 3)])
    assert merged == [Line("b", 4), Line("a", 2)]


@given(st.lists(st.tuples(st.sampled_from("abcde"), st.integers(1, 100)), max_size=30))
def test_merge_keeps_every_unit(raw: list[tuple[str, int]]) -> None:
    merged = merge_lines(Line(i, q) for i, q in raw)
    assert sum(x.quantity for x in merged) == sum(q for _, q in raw)
    assert len({x.item_id for x in merged}) == len(merged)


ids = st.text(alphabet="ABCxyz019_-", min_size=1, max_size=64)
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@given(times, ids)
def test_cursor_round_trips(at: datetime, order_id: str) -> None:
    assert decode_cursor(encode_cursor(at, order_id)) == (at.replace(tzinfo=None), order_id)


@pytest.mark.parametrize(
    "cursor", ["", "garbage", "!!!", "eyJ2IjogMn0", "W10", "eyJ2IjoxfQ", "x" * 201, "bnVsbA"]
)
def test_bad_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor)


@given(st.text(max_size=210))
def test_any_text_is_a_cursor_or_refused(cursor: str) -> None:
    """Never another exception (which the API would turn into a 500)."""
    try:
        at, order_id = decode_cursor(cursor)
    except InvalidCursor:
        return
    assert at.tzinfo is None
    assert isinstance(order_id, str)


def test_order_ids_are_unguessable() -> None:
    made = {new_order_id() for _ in range(1000)}
    assert len(made) == 1000
    assert all(len(x) == 22 for x in made)


def test_rfc3339_is_utc_with_z() -> None:
    naive = datetime(2025, 1, 2, 3, 4, 5, 6)
    assert rfc3339(naive) == "2025-01-02T03:04:05.000006Z"
    aware = datetime(2025, 1, 2, 12, 0, tzinfo=UTC) + timedelta(hours=0)
    assert rfc3339(aware) == "2025-01-02T12:00:00Z"
    assert rfc3339(None) is None


@pytest.mark.parametrize(
    "body",
    [
        {"lines": [{"item_id": "a", "quantity": 1}]},
        {"from_cart": True},
    ],
)
def test_create_order_takes_lines_or_the_cart(body: dict[str, object]) -> None:
    CreateOrder.model_validate(body)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"from_cart": False},
        {"lines": [{"item_id": "a", "quantity": 1}], "from_cart": True},
        {"lines": []},
        {"lines": [{"item_id": "a", "quantity": True}]},
        {"from_cart": 1},
        {"lines": [{"item_id": "a", "quantity": 1}], "coupon": "x"},
    ],
)
def test_create_order_refuses(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CreateOrder.model_validate(body)


def test_sold_out_hints_refuse_only_hinted_items_until_they_lapse() -> None:
    from snapshoe.orders.admission import SoldOutHints

    hints = SoldOutHints(ttl=0.5)
    hints.remember(["a"], now=10.0)
    assert hints.refused(["a", "b"], now=10.1) == ["a"]
    assert hints.refused(["b"], now=10.1) == []
    assert hints.still_refused(["a", "b"], now=10.1) == ["a"]
    assert hints.refused(["a"], now=10.5) == []  # lapsed exactly at ttl: this caller probes
    hints.remember(["a"], now=11.0)
    hints.forget(["a"])
    assert hints.refused(["a"], now=11.1) == []
    assert hints.refused(["a"], now=11.1) == []  # forgotten: no probe, everyone asks


def test_a_lapsed_hint_lets_one_probe_through_and_refuses_the_rest_meanwhile() -> None:
    from snapshoe.orders.admission import SoldOutHints

    hints = SoldOutHints(ttl=0.5)
    hints.remember(["a"], now=10.0)
    assert hints.refused(["a"], now=10.6) == []  # the probe
    assert [hints.refused(["a"], now=10.7) for _ in range(50)] == [["a"]] * 50
    # The probe is not turned away by its own mark after waiting for a slot...
    assert hints.still_refused(["a"], now=10.8) == []
    # ...and products' answer renews the hint (sold out) or ends it (sold).
    hints.remember(["a"], now=10.9)
    assert hints.refused(["a"], now=11.3) == ["a"]
    assert hints.still_refused(["a"], now=11.3) == ["a"]
    assert hints.refused(["a"], now=11.5) == []  # lapsed again: a new probe
    hints.forget(["a"])
    assert hints.refused(["a"], now=11.6) == []
    assert hints.refused(["a"], now=11.6) == []
    # A probe that never hears back (a timeout) blocks others for at most another ttl.
    hints.remember(["b"], now=20.0)
    assert hints.refused(["b"], now=20.5) == []
    assert hints.refused(["b"], now=20.9) == ["b"]
    assert hints.refused(["b"], now=21.0) == []  # the next probe
    # A caller refused for one item does not take the probe of another.
    hints.remember(["c", "d"], now=30.0)
    hints.remember(["d"], now=30.4)
    assert hints.refused(["c", "d"], now=30.6) == ["d"]
    assert hints.refused(["c"], now=30.6) == []  # still free to probe


def test_sold_out_hints_off_with_zero_ttl() -> None:
    from snapshoe.orders.admission import SoldOutHints

    hints = SoldOutHints(ttl=0)
    hints.remember(["a"], now=1.0)
    assert hints.refused(["a"], now=1.0) == []
