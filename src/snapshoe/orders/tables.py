"""Tables of the orders service database (``<namespace>_orders``).

An order keeps a snapshot of each line (product name, size, color, unit price) so that its
history never changes when the catalog does. ``stock_state`` is what orders last asked of the
reservation at products: ``COMMITTING`` / ``RELEASING`` are intents written in the same
transaction as the status change, settled by the worker (and retried until products agrees),
so a products outage can delay stock, never lose it.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

from snapshoe.kernel.db import ts_column
from snapshoe.kernel.messaging import messaging_tables

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


orders = Table(
    "orders",
    metadata,
    Column("id", String(32), primary_key=True),  # = the reservation id at products
    Column("buyer_id", String(64), nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    # sha256 of the creating request: tells a replay from a reuse when Redis lost the key.
    Column("request_fingerprint", String(64), nullable=False),
    Column("status", String(20), nullable=False),
    Column("total_amount", BigInteger, nullable=False),
    Column("from_cart", Boolean, nullable=False, default=False),
    Column("stock_state", String(12), nullable=False),
    Column("payment_id", String(64), nullable=True),
    ts_column("created_at"),
    ts_column("updated_at"),
    ts_column("expires_at"),
    ts_column("paid_at", nullable=True),
    ts_column("refunded_at", nullable=True),
    # When the lifecycle worker (issue 5) must look at the order next: expires_at while
    # PENDING_PAYMENT, the next stage while PREPARING/SHIPPING, NULL when final.
    ts_column("next_transition_at", nullable=True),
    # The traceparent of the request that placed the order (tracing export on only).
    Column("trace_parent", String(55), nullable=True),
    # A lost Redis idempotency key can never create a second order.
    UniqueConstraint("buyer_id", "idempotency_key", name="uq_orders_buyer_id_idempotency_key"),
    # "My orders, newest first" with a (created_at, id) keyset cursor.
    Index("ix_orders_buyer_id_created_at_id", "buyer_id", "created_at", "id"),
    # Every buyer's orders, newest first (the admin list), on the same keyset.
    Index("ix_orders_created_at_id", "created_at", "id"),
    Index("ix_orders_status_next_transition_at", "status", "next_transition_at"),
    Index("ix_orders_stock_state", "stock_state"),
)

order_lines = Table(
    "order_lines",
    metadata,
    Column("order_id", String(32), ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True),
    Column("line_no", Integer, primary_key=True, autoincrement=False),
    Column("item_id", String(64), nullable=False),
    Column("product_id", String(64), nullable=False),
    Column("product_name", String(200), nullable=False),
    Column("size", Integer, nullable=False),
    Column("color", String(50), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price", BigInteger, nullable=False),
    # The admin list's product filter: the orders holding a line of a product.
    Index("ix_order_lines_product_id", "product_id"),
)

order_history = Table(
    "order_history",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("order_id", String(32), ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    Column("status", String(20), nullable=False),
    Column("reason", String(64), nullable=True),
    ts_column("at"),
    Index("ix_order_history_order_id_id", "order_id", "id"),
)

outbox, inbox = messaging_tables(metadata)
