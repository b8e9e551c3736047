"""The admin orders list (GET /api/admin/orders): every buyer's orders newest first on
(created_at, id), the same keyset as a buyer's own list, and the orders holding a product
(order_lines.product_id). Without them each page sorted or scanned the whole table.

Revision ID: orders_0003_admin
Revises: orders_0002_events
Create Date: 2026-12-05 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "orders_0003_admin"
down_revision: str | Sequence[str] | None = "orders_0002_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_orders_created_at_id", "orders", ["created_at", "id"])
    op.create_index("ix_order_lines_product_id", "order_lines", ["product_id"])


def downgrade() -> None:
    op.drop_index("ix_order_lines_product_id", table_name="order_lines")
    op.drop_index("ix_orders_created_at_id", table_name="orders")
