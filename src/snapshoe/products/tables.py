"""The products database: catalog, the stock ledger and reservations.

The ledger invariant ``initial = sold + reserved + available`` (all >= 0) is a CHECK
constraint, and every change to it is a conditional UPDATE, never read-modify-write.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from snapshoe.kernel.db import ts_column
from snapshoe.kernel.messaging import messaging_tables

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    }
)


products = Table(
    "products",
    metadata,
    Column("id", String(32), primary_key=True),  # ULID: sorts by creation time
    Column("name", String(200), nullable=False),
    Column("brand", String(100), nullable=False),
    Column("description", Text, nullable=False),
    Column("price", Integer, nullable=False),
    Column("thumbnail_url", String(500), nullable=True),
    ts_column("release_at"),
    Column("per_user_limit", Integer, nullable=False, server_default="0"),
    ts_column("created_at"),
    ts_column("updated_at"),
    # 'gate' (Redis gate in front of the ledger) or 'db_lock': a benchmark/teaching baseline
    # that takes stock with row locks only (docs/products.md). Set at creation, never changed.
    Column("stock_mode", String(8), nullable=False, server_default="gate"),
    # 'fcfs' (first come, first served), 'queue' (a waiting room in front of the purchase:
    # docs/waiting-room.md), with the queue's opening time and admission window, or 'draw' (a
    # raffle: docs/draws.md), with its entry window and draw time.
    Column("sale_mode", String(8), nullable=False, server_default="fcfs"),
    ts_column("queue_opens_at", nullable=True),
    Column("admission_seconds", Integer, nullable=True),
    ts_column("entry_opens_at", nullable=True),
    ts_column("entry_closes_at", nullable=True),
    ts_column("draw_at", nullable=True),
    CheckConstraint("price >= 0", name="price_nonneg"),
    CheckConstraint("per_user_limit >= 0", name="limit_nonneg"),
    CheckConstraint("stock_mode IN ('gate', 'db_lock')", name="stock_mode"),
    CheckConstraint("sale_mode IN ('fcfs', 'queue', 'draw')", name="sale_mode"),
    Index(None, "brand", "id"),
)

items = Table(
    "items",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("product_id", String(32), ForeignKey("products.id"), nullable=False),
    Column("size", Integer, nullable=False),
    Column("color", String(50), nullable=False),
    Column("price", Integer, nullable=True),  # None: the product's price
    Column("initial", Integer, nullable=False),
    Column("sold", Integer, nullable=False, server_default="0"),
    Column("reserved", Integer, nullable=False, server_default="0"),
    Column("available", Integer, nullable=False),
    ts_column("created_at"),
    CheckConstraint(
        "initial = sold + reserved + available AND sold >= 0 AND reserved >= 0 AND available >= 0",
        name="ledger",
    ),
    Index(None, "product_id", "available"),
)

reservations = Table(
    "reservations",
    metadata,
    Column("id", String(64), primary_key=True),  # the order id
    Column("buyer_id", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # ACTIVE -> COMMITTED | RELEASED
    ts_column("reserved_until"),
    ts_column("created_at"),
    ts_column("updated_at"),
    Column("refunded", Integer, nullable=False, server_default="0"),  # released after commit
    CheckConstraint("state IN ('ACTIVE', 'COMMITTED', 'RELEASED')", name="state"),
    Index(None, "state", "reserved_until"),  # the sweeper
    Index(None, "buyer_id", "state"),
)

reservation_lines = Table(
    "reservation_lines",
    metadata,
    Column("reservation_id", String(64), ForeignKey("reservations.id"), primary_key=True),
    Column("item_id", String(32), ForeignKey("items.id"), primary_key=True),
    Column("product_id", String(32), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price", Integer, nullable=False),
    CheckConstraint("quantity > 0", name="qty_pos"),
    Index(None, "product_id", "reservation_id"),  # per-buyer sums per product (gate rebuild)
)

# One row (id = 1). Every ledger write holds it in SHARE mode and checks ``epoch``; a gate
# rebuild holds it FOR UPDATE and bumps ``epoch``, so no admission made by an older gate can
# reach the ledger after the rebuild has read it.
gate_state = Table(
    "gate_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("epoch", BigInteger, nullable=False),
    # INFO server run_id of the Redis the gate was last built on: another one (a restart from a
    # snapshot, a failover) is detected and rebuilt before it admits anyone (gate.py).
    Column("run_id", String(64), nullable=True),
)

# The ledger's own per-buyer limit (gate products): units a buyer holds of a product in ACTIVE
# + COMMITTED reservations. Every gate reservation adds with ``ON DUPLICATE KEY UPDATE lim =
# VALUES(lim), units = units + VALUES(units)``, so the CHECK refuses an over-limit one even
# when the Redis gate forgot what the buyer holds; a release subtracts.
buyer_holds = Table(
    "buyer_holds",
    metadata,
    Column("product_id", String(32), primary_key=True),
    Column("buyer_id", String(64), primary_key=True),
    Column("units", Integer, nullable=False),
    Column("lim", Integer, nullable=False, server_default="0"),  # the limit when last added
    CheckConstraint("units >= 0", name="units_nonneg"),
    CheckConstraint("lim = 0 OR units <= lim", name="within_limit"),
)

# The waiting room (docs/waiting-room.md). One row per queue-mode product: ``state`` 'pre'
# (tickets wait unranked), 'running' (ranked; ``head``: every place up to it has left waiting,
# so a waiting ticket's position is place - head) or 'ended' (nothing can come back; every
# waiting ticket is sold_out). Joins before the release hold this row in SHARE mode and the
# release holds it FOR UPDATE, so no ticket is left unranked by a join racing the release.
queues = Table(
    "queues",
    metadata,
    Column("product_id", String(32), ForeignKey("products.id"), primary_key=True),
    Column("state", String(8), nullable=False),
    Column("next_place", BigInteger, nullable=False),
    Column("head", BigInteger, nullable=False),
    ts_column("released_at", nullable=True),
    ts_column("ended_at", nullable=True),
    CheckConstraint("state IN ('pre', 'running', 'ended')", name="state"),
    CheckConstraint("head >= 0 AND next_place > head", name="places"),
)

# One ticket per buyer per product. ``lottery``: a random 62-bit number drawn (secrets) at a
# join before the release; the release ranks those tickets by it, a uniformly random order.
# ``place``: the rank (1-based), set at the release or, after it, at the join (arrival order).
queue_tickets = Table(
    "queue_tickets",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("product_id", String(32), ForeignKey("products.id"), nullable=False),
    Column("buyer_id", String(64), nullable=False),
    Column("lottery", BigInteger, nullable=True),
    Column("place", BigInteger, nullable=True),
    Column("state", String(10), nullable=False),
    ts_column("joined_at"),
    ts_column("admitted_at", nullable=True),
    ts_column("admitted_until", nullable=True),
    ts_column("ended_at", nullable=True),
    Column("order_id", String(64), nullable=True),  # the reservation that used the admission
    CheckConstraint(
        "state IN ('waiting', 'admitted', 'used', 'expired', 'sold_out')", name="state"
    ),
    UniqueConstraint("product_id", "buyer_id"),
    UniqueConstraint("product_id", "place"),
    Index(None, "product_id", "state", "place"),  # the outflow: next waiting, outstanding
)

# Draws (docs/draws.md). One row per draw-mode product: ``seed`` (64 hex) is secret until
# ``state`` leaves 'open' (then revealed); ``commitment`` = sha256(seed), public from the start.
# 'open' (entries taken until entry_closes_at) -> 'drawn' (ranked at draw_at; charging in rank
# order) -> 'settled' (every entry decided).
draws = Table(
    "draws",
    metadata,
    Column("product_id", String(32), ForeignKey("products.id"), primary_key=True),
    Column("seed", String(64), nullable=False),
    Column("commitment", String(64), nullable=False),
    Column("state", String(8), nullable=False),
    ts_column("drawn_at", nullable=True),
    ts_column("settled_at", nullable=True),
    CheckConstraint("state IN ('open', 'drawn', 'settled')", name="state"),
)
# One entry per buyer per product, and one per card (``card_active``: the card's fingerprint
# while the entry is not withdrawn, else NULL, which a UNIQUE key does not compare). ``rank``:
# the place in its size's ranking (1 = charged first), set at the draw. ``order_id``: the
# order (and reservation) of its charge, chosen when the entry is drawn for a charge.
draw_entries = Table(
    "draw_entries",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("product_id", String(32), ForeignKey("products.id"), nullable=False),
    Column("item_id", String(32), ForeignKey("items.id"), nullable=False),
    Column("buyer_id", String(64), nullable=False),
    Column("billing_key", String(200), nullable=False),
    Column("card_number", String(32), nullable=False),  # masked, as the PG shows it
    Column("card_fingerprint", String(64), nullable=False),
    Column("card_active", String(64), nullable=True),
    Column("state", String(16), nullable=False),
    Column("rank", BigInteger, nullable=True),
    Column("order_id", String(64), nullable=True, unique=True),
    ts_column("charge_sent_at", nullable=True),  # the last time its order/charge was asked for
    ts_column("created_at"),
    ts_column("updated_at"),
    ts_column("decided_at", nullable=True),
    CheckConstraint(
        "state IN ('entered', 'withdrawn', 'charging', 'won', 'lost', 'payment_failed')",
        name="state",
    ),
    UniqueConstraint("product_id", "buyer_id"),
    UniqueConstraint("product_id", "card_active"),
    Index(None, "product_id", "item_id", "state", "rank"),  # the next entrants of a size
    Index(None, "product_id", "state", "charge_sent_at"),  # charges to ask for again
)

# A draw's results leave as events (docs/draws.md, "Mails"); the inbox is unused for now.
outbox, inbox = messaging_tables(metadata)
