"""The waiting room's pure rules: admission tokens, positions, how many to admit, the end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from snapshoe.products import admission_tokens as tokens
from snapshoe.products.domain import (
    QUEUE_LEAD,
    admissions_due,
    nothing_can_come_back,
    position,
    queue_opens_at,
)

KEY = tokens.signing_key("an-internal-token-for-tests")
NOW_MS = 1_800_000_000_000


def token(
    ticket: str = "T1", buyer: str = "b1", product: str = "p1", until: int = NOW_MS + 60_000
) -> str:
    return tokens.sign(KEY, ticket, buyer, product, until)


def test_a_token_verifies_for_its_buyer_product_and_time() -> None:
    found = tokens.verify(KEY, token(), "b1", "p1", NOW_MS)
    assert found == tokens.Admission("T1", NOW_MS + 60_000)


@pytest.mark.parametrize(
    ("buyer", "product", "now"),
    [
        ("b2", "p1", NOW_MS),  # someone else's
        ("b1", "p2", NOW_MS),  # another product's
        ("b1", "p1", NOW_MS + 60_000),  # lapsed (the deadline itself is too late)
    ],
)
def test_a_token_is_refused_for_anyone_anything_or_any_time_else(
    buyer: str, product: str, now: int
) -> None:
    assert tokens.verify(KEY, token(), buyer, product, now) is None


def test_an_altered_or_forged_token_is_refused() -> None:
    good = token()
    prefix, ticket, until, sig = good.split(".")
    later = f"{prefix}.{ticket}.{int(until) + 3_600_000}.{sig}"  # a longer deadline
    other_ticket = f"{prefix}.T2.{until}.{sig}"
    other_key = tokens.sign(
        tokens.signing_key("another-secret-entirely"), "T1", "b1", "p1", int(until)
    )
    flipped = good[:-1] + ("A" if good[-1] != "A" else "B")
    for bad in (later, other_ticket, other_key, flipped, "", "a1.T1", "a1.T1.x.y", good + ".x"):
        assert tokens.verify(KEY, bad, "b1", "p1", NOW_MS) is None, bad


def test_positions_count_from_the_head() -> None:
    assert position("waiting", 7, 3) == 4
    assert position("waiting", 4, 3) == 1
    assert position("waiting", None, 0) is None  # before the ranking
    assert position("admitted", 3, 3) is None


def test_admissions_never_exceed_the_pairs_left_for_them() -> None:
    assert admissions_due(available=10, outstanding=0, waiting=100) == 10
    assert admissions_due(available=10, outstanding=4, waiting=100) == 6
    assert admissions_due(available=10, outstanding=10, waiting=100) == 0
    assert admissions_due(available=10, outstanding=12, waiting=100) == 0  # over: none
    assert admissions_due(available=10, outstanding=0, waiting=3) == 3


def test_the_queue_ends_only_when_nothing_can_come_back() -> None:
    assert nothing_can_come_back(available=0, reserved=0, outstanding=0)
    assert not nothing_can_come_back(available=0, reserved=1, outstanding=0)  # unpaid order
    assert not nothing_can_come_back(available=0, reserved=0, outstanding=1)  # may lapse
    assert not nothing_can_come_back(available=1, reserved=0, outstanding=0)


def test_the_queue_opens_a_lead_before_the_release_unless_told() -> None:
    release = datetime(2026, 12, 24, 10, tzinfo=UTC)
    assert queue_opens_at(release, None) == release - QUEUE_LEAD
    given = release - timedelta(hours=2)
    assert queue_opens_at(release, given) == given
