"""The products service's dependency record (built by bootstrap.open_deps) and the item type of
its group commit. Everything that runs a job takes a :class:`Deps`; nothing here imports a job."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from snapshoe.kernel.batching import GroupCommit
from snapshoe.kernel.clients.orders import OrdersClient
from snapshoe.kernel.clients.payments import PaymentsClient
from snapshoe.kernel.clients.users import UsersClient
from snapshoe.kernel.db import Sessions
from snapshoe.products.cache import TTLCache
from snapshoe.products.domain import Line, ProductLines
from snapshoe.products.gate import Gate
from snapshoe.products.queue_hub import QueueHub
from snapshoe.products.schemas import ReservationOut, ReserveIn
from snapshoe.products.settings import ProductsSettings


@dataclass(frozen=True, slots=True)
class Admitted:
    """A reservation the gate has just admitted, on its way to the ledger (Deps.ledger)."""

    body: ReserveIn
    lines: list[Line]
    groups: list[ProductLines]
    epoch: int


@dataclass
class Deps:
    settings: ProductsSettings
    engine: AsyncEngine
    sessions: Sessions
    redis: Redis
    gate: Gate
    # The waiting rooms' live updates in this process (queue_hub.py).
    queue_hub: QueueHub
    # The users service: an account's age, when a queue asks for a minimum (queue_tickets.py).
    users: UsersClient
    # A draw's winners: their orders (orders) and charges through their billing keys
    # (payments, which also checks a billing key at entry). docs/draws.md.
    orders: OrdersClient
    payments: PaymentsClient
    # Group commit of admitted reservations (ledger.write_admitted); started in open_deps.
    ledger: GroupCommit[Admitted, ReservationOut] = field(init=False)
    cache: TTLCache = field(default_factory=TTLCache)
    # item id -> product id; an item never moves to another product, so this never goes stale.
    item_products: dict[str, str] = field(default_factory=dict)
    # product id -> stock mode ('gate' | 'db_lock'); set at creation, never changed.
    product_modes: dict[str, str] = field(default_factory=dict)
    # The key admission tokens are signed with (admission_tokens.signing_key).
    admission_key: bytes = b""
    # Ticket reads of the open streams at once (a release wakes the whole crowd).
    stream_reads: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(16))
    # Joins at once: after the release each waits for the queue's row, and a crowd of them
    # holding every pooled connection starved the reserve path (bench queue, 20,000 buyers).
    join_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(8))
    # One verification of the gate's Redis at a time per process (rebuild.verify_gate).
    gate_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
