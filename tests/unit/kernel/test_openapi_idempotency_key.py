"""The documented ``Idempotency-Key`` schema (``kernel.openapi.IDEMPOTENCY_KEY``) admits only
keys ``kernel.idempotency.require_key`` accepts. Found by the fuzzer (tests/e2e/test_fuzz.py):
the schema said any 1..255 string, so valid requests by the spec got 400
``idempotency_key_invalid`` (a space, a non-ASCII letter, a lone quote)."""

from __future__ import annotations

import asyncio
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from snapshoe.kernel.errors import Problem
from snapshoe.kernel.idempotency import require_key
from snapshoe.kernel.openapi import IDEMPOTENCY_KEY

SCHEMA = IDEMPOTENCY_KEY["schema"]


def _documented(value: str) -> bool:
    return (
        SCHEMA["minLength"] <= len(value) <= SCHEMA["maxLength"]
        and re.search(SCHEMA["pattern"], value) is not None
    )


def _accepted(value: str) -> bool:
    raw = value.encode("latin-1", "replace")
    request = Request({"type": "http", "headers": [(b"idempotency-key", raw)]})
    try:
        asyncio.run(require_key(request))
    except Problem:
        return False
    return True


def test_the_schema_has_a_pattern() -> None:
    assert "pattern" in SCHEMA


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.from_regex(SCHEMA["pattern"], fullmatch=True).filter(lambda v: len(v) <= 255))
def test_every_documented_key_is_accepted(value: str) -> None:
    assert _accepted(value)


@pytest.mark.parametrize("value", ["a b", "café", '"', '""', " ", "\t", "x" * 256])
def test_keys_the_server_refuses_are_not_documented(value: str) -> None:
    assert not _accepted(value)
    assert not _documented(value)


@pytest.mark.parametrize("value", ["k-1", "0", 'a"b', "~!#", "x" * 255])
def test_ordinary_keys_are_documented_and_accepted(value: str) -> None:
    assert _documented(value)
    assert _accepted(value)
