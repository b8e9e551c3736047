"""The dependency record of the orders service (:class:`Deps`) and the group-commit item
type (:class:`Placement`). Below ``api``, ``consumers`` and the handlers, which import this
module; ``bootstrap`` builds a :class:`Deps` and wires its group commit."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from snapshoe.kernel.batching import GroupCommit
from snapshoe.kernel.clients.payments import PaymentsClient
from snapshoe.kernel.clients.products import ProductsClient
from snapshoe.kernel.clients.users import UsersClient
from snapshoe.kernel.contracts.orders import OrderPlaced
from snapshoe.kernel.db import Sessions
from snapshoe.kernel.idempotency import IdempotencyStore
from snapshoe.orders.admission import ItemSnapshots, SoldOutHints
from snapshoe.orders.refusals import ItemProducts
from snapshoe.orders.settings import OrdersSettings


@dataclass(frozen=True, slots=True)
class Placement:
    """A reserved order on its way to the database (Deps.placements)."""

    order: dict[str, Any]
    lines: list[dict[str, Any]]
    event: OrderPlaced
    now: datetime
    trace: dict[str, str] | None = None  # the request's trace context, for its event


@dataclass(slots=True)
class Deps:
    settings: OrdersSettings
    engine: AsyncEngine
    sessions: Sessions
    redis: Redis
    idempotency: IdempotencyStore
    products: ProductsClient
    users: UsersClient
    # The operator's figures only (GET /api/admin/operations): its outbox.
    payments: PaymentsClient
    items: ItemSnapshots
    # Which product an item is, for counting refusals per product (refusals.py).
    item_products: ItemProducts
    sold_out: SoldOutHints
    reserve_slots: asyncio.Semaphore
    # Group commit of new orders (placing.write_placements); started by the app's lifespan.
    placements: GroupCommit[Placement, None] = field(init=False)
    # Fire-and-forget compensations (releases) still running; kept so they aren't collected.
    background: set[asyncio.Task[None]] = field(default_factory=set)
