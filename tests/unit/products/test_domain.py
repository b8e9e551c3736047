"""Pure rules of the products service: ids, cursors, search patterns, line grouping, status,
and the read cache."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snapshoe.kernel.cursors import InvalidCursor
from snapshoe.products.cache import TTLCache
from snapshoe.products.domain import (
    Line,
    decode_cursor,
    encode_cursor,
    group_by_product,
    like_pattern,
    merge_lines,
    new_id,
    product_status,
)


def test_ids_sort_by_creation_time() -> None:
    ids = [new_id(now_ms=1_700_000_000_000 + n) for n in range(50)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 50
    assert all(len(i) == 26 and i.isalnum() for i in ids)
    assert new_id(now_ms=5) != new_id(now_ms=5)  # 80 random bits


@given(st.text(alphabet="0123456789ABCDEFGHJKMNPQRSTVWXYZ", min_size=1, max_size=32))
def test_cursor_round_trip(last_id: str) -> None:
    assert decode_cursor(encode_cursor(last_id)) == last_id


@given(st.text(max_size=300))
def test_decode_cursor_never_fails_otherwise(raw: str) -> None:
    with contextlib.suppress(InvalidCursor):
        decode_cursor(raw)


def test_like_pattern_escapes_wildcards() -> None:
    assert like_pattern("air") == "%air%"
    assert like_pattern("100%") == "%100\\%%"
    assert like_pattern("a_b") == "%a\\_b%"
    assert like_pattern("back\\slash") == "%back\\\\slash%"


def test_merge_lines_adds_quantities_and_sorts_by_item() -> None:
    merged = merge_lines([Line("b", 1), Line("a", 2), Line("b", 3)])
    assert merged == [Line("a", 2), Line("b", 4)]


def test_group_by_product_is_sorted_by_product() -> None:
    lines = [Line("i1", 1), Line("i2", 2), Line("i3", 1)]
    groups = group_by_product(lines, {"i1": "p2", "i2": "p1", "i3": "p2"})
    assert [g.product_id for g in groups] == ["p1", "p2"]
    assert [g.units for g in groups] == [2, 2]
    assert [x.item_id for x in groups[1].lines] == ["i1", "i3"]


def test_product_status() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert product_status(now + timedelta(seconds=1), 10, now) == "upcoming"
    assert product_status(now, 10, now) == "live"
    assert product_status(now - timedelta(days=1), 0, now) == "sold_out"
    # Naive datetimes (from the DB) are UTC.
    assert product_status(datetime(2025, 1, 1, 0, 0, 1), 1, now) == "upcoming"


async def test_cache_loads_once_for_concurrent_readers() -> None:
    cache = TTLCache(ttl_seconds=60)
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return 42

    values = await asyncio.gather(*(cache.get("k", load) for _ in range(200)))
    assert values == [42] * 200
    assert calls == 1
    assert await cache.get("k", load) == 42
    assert calls == 1
    cache.clear()
    assert await cache.get("k", load) == 42
    assert calls == 2


async def test_cache_expires_and_does_not_keep_errors() -> None:
    cache = TTLCache(ttl_seconds=0.01)
    n = 0

    async def load() -> int:
        nonlocal n
        n += 1
        if n == 2:
            raise RuntimeError("db down")
        return n

    assert await cache.get("k", load) == 1
    await asyncio.sleep(0.02)
    with pytest.raises(RuntimeError):
        await cache.get("k", load)
    assert await cache.get("k", load) == 3
