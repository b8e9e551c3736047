"""Pure cart rules: the view (normal, degraded, unknown items), what an order takes out of the
cart, and the request schema."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from snapshoe.users.domain import (
    ITEM_ID_PATTERN,
    CartEntry,
    ItemInfo,
    bought_quantities,
    build_cart_view,
    quantity_left,
)
from snapshoe.users.schemas import CartLineRequest


def info(item_id: str, price: int, available: bool = True) -> ItemInfo:
    return ItemInfo(item_id, "P1", "Runner", 270, "Black", price, available)


def test_view_prices_every_line_and_totals_them() -> None:
    entries = [CartEntry("A", 2), CartEntry("B", 1)]
    view = build_cart_view(entries, {"A": info("A", 1000), "B": info("B", 250, False)})
    assert not view.degraded
    assert view.total_amount == 2 * 1000 + 250
    assert [(v.item_id, v.quantity, v.unit_price, v.available) for v in view.lines] == [
        ("A", 2, 1000, True),
        ("B", 1, 250, False),
    ]


def test_view_of_an_item_products_no_longer_knows() -> None:
    view = build_cart_view([CartEntry("A", 2), CartEntry("GONE", 3)], {"A": info("A", 1000)})
    gone = view.lines[1]
    assert (gone.item_id, gone.quantity, gone.available, gone.unit_price) == (
        "GONE",
        3,
        False,
        None,
    )
    assert view.total_amount == 2000
    assert not view.degraded


def test_degraded_view_keeps_lines_and_has_no_total() -> None:
    view = build_cart_view([CartEntry("A", 2), CartEntry("B", 1)], None)
    assert view.degraded
    assert view.total_amount is None
    assert [(v.item_id, v.quantity) for v in view.lines] == [("A", 2), ("B", 1)]
    assert all(v.available is None and v.product_name is None for v in view.lines)


def test_empty_cart_is_never_degraded() -> None:
    view = build_cart_view([], None)
    assert (view.lines, view.total_amount, view.degraded) == ((), 0, False)


def test_bought_quantities_sums_repeated_items() -> None:
    assert bought_quantities([("A", 1), ("B", 2), ("A", 3), ("C", 0)]) == {"A": 4, "B": 2}


@given(st.integers(1, 10), st.integers(1, 20))
def test_quantity_left_takes_only_what_was_bought(in_cart: int, bought: int) -> None:
    left = quantity_left(in_cart, bought)
    assert 0 <= left <= in_cart
    assert left == (in_cart - bought if in_cart > bought else 0)


@pytest.mark.parametrize("quantity", [1, 5, 10])
def test_quantity_in_bounds(quantity: int) -> None:
    assert CartLineRequest.model_validate({"quantity": quantity}).quantity == quantity


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"quantity": 0},
        {"quantity": 11},
        {"quantity": -1},
        {"quantity": "2"},
        {"quantity": 2.5},
        {"quantity": True},
        {"quantity": None},
    ],
)
def test_bad_quantity_is_refused(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CartLineRequest.model_validate(body)


@pytest.mark.parametrize(
    ("item_id", "ok"),
    [
        ("01JDZ5V8N7Q3K2M4P6R8T0W2Y4", True),
        ("abc_DEF-1.2~", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("", False),
        ("a,b", False),
        ("a b", False),
        ("a/b", False),
    ],
)
def test_item_id_pattern(item_id: str, ok: bool) -> None:
    assert bool(re.fullmatch(ITEM_ID_PATTERN, item_id)) is ok
