"""The payments service's dependency record: ``Core`` is what the workers need too (database,
the PG adapter); ``Deps`` adds what only the HTTP app needs (Redis for Idempotency-Keys, the
orders client, the token verifier). Built by :mod:`snapshoe.payments.bootstrap`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import aiohttp
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from snapshoe.kernel.auth import TokenVerifier
from snapshoe.kernel.contracts.internal_orders import InternalOrder
from snapshoe.kernel.db import Sessions
from snapshoe.kernel.idempotency import IdempotencyStore
from snapshoe.payments.pg import TossPaymentsClient
from snapshoe.payments.settings import PaymentsSettings


class Orders(Protocol):
    """What payments needs of orders (``kernel.clients.orders.OrdersClient``; tests fake it)."""

    async def get_order(self, order_id: str) -> InternalOrder: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class Core:
    settings: PaymentsSettings
    engine: AsyncEngine
    sessions: Sessions
    pg: TossPaymentsClient
    pg_http: aiohttp.ClientSession


@dataclass(slots=True)
class Deps(Core):
    redis: Redis
    idempotency: IdempotencyStore
    orders: Orders
    verifier: TokenVerifier
