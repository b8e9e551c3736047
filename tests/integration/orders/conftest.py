"""Fixtures of the orders integration tests: the real platform (``snapshoe up``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tests.integration.orders.helpers import OrdersEnv
from tests.support.platform import Platform


@pytest.fixture(scope="session")
async def orders_env(platform: Platform) -> AsyncIterator[OrdersEnv]:
    env = OrdersEnv(platform)
    try:
        yield env
    finally:
        await env.aclose()
