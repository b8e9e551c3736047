"""Waiting for something another process does (a consumer, a worker, a service): poll until it
holds or a deadline passes, failing with what was last seen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    timeout: float = 15,
    interval: float = 0.1,
) -> T:
    """Poll ``probe`` until ``done(result)``; fails with the last result after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s; last: {result!r}")
        await asyncio.sleep(interval)


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 15, what: str = "condition"
) -> None:
    """Poll ``check`` until it is true; fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)
