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
)

from snapshoe.kernel.db import ts_column

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
    CheckConstraint("price >= 0", name="price_nonneg"),
    CheckConstraint("per_user_limit >= 0", name="limit_nonneg"),
    CheckConstraint("stock_mode IN ('gate', 'db_lock')", name="stock_mode"),
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
