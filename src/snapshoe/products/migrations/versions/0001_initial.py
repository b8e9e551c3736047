"""catalog, stock ledger, reservations, gate epoch

Revision ID: 0001
Revises:
Create Date: 2025-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.mysql import DATETIME

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, DATETIME(fsp=6), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("brand", sa.String(100), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("price", sa.Integer, nullable=False),
        sa.Column("thumbnail_url", sa.String(500), nullable=True),
        _ts("release_at"),
        sa.Column("per_user_limit", sa.Integer, nullable=False, server_default="0"),
        _ts("created_at"),
        _ts("updated_at"),
        sa.CheckConstraint("price >= 0", name=op.f("ck_products_price_nonneg")),
        sa.CheckConstraint("per_user_limit >= 0", name=op.f("ck_products_limit_nonneg")),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_products_brand_id"), "products", ["brand", "id"])
    op.create_table(
        "items",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("product_id", sa.String(32), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("color", sa.String(50), nullable=False),
        sa.Column("price", sa.Integer, nullable=True),
        sa.Column("initial", sa.Integer, nullable=False),
        sa.Column("sold", sa.Integer, nullable=False, server_default="0"),
        sa.Column("reserved", sa.Integer, nullable=False, server_default="0"),
        sa.Column("available", sa.Integer, nullable=False),
        _ts("created_at"),
        sa.CheckConstraint(
            "initial = sold + reserved + available AND sold >= 0 AND reserved >= 0 "
            "AND available >= 0",
            name=op.f("ck_items_ledger"),
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_items_product_id_products")
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_items_product_id_available"), "items", ["product_id", "available"])
    op.create_table(
        "reservations",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("buyer_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        _ts("reserved_until"),
        _ts("created_at"),
        _ts("updated_at"),
        sa.Column("refunded", sa.Integer, nullable=False, server_default="0"),
        sa.CheckConstraint(
            "state IN ('ACTIVE', 'COMMITTED', 'RELEASED')", name=op.f("ck_reservations_state")
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_reservations_state_reserved_until"), "reservations", ["state", "reserved_until"]
    )
    op.create_index(op.f("ix_reservations_buyer_id_state"), "reservations", ["buyer_id", "state"])
    op.create_table(
        "reservation_lines",
        sa.Column("reservation_id", sa.String(64), nullable=False),
        sa.Column("item_id", sa.String(32), nullable=False),
        sa.Column("product_id", sa.String(32), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("unit_price", sa.Integer, nullable=False),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_reservation_lines_qty_pos")),
        sa.ForeignKeyConstraint(
            ["reservation_id"],
            ["reservations.id"],
            name=op.f("fk_reservation_lines_reservation_id_reservations"),
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name=op.f("fk_reservation_lines_item_id_items")
        ),
        sa.PrimaryKeyConstraint("reservation_id", "item_id"),
    )
    op.create_index(
        op.f("ix_reservation_lines_product_id_reservation_id"),
        "reservation_lines",
        ["product_id", "reservation_id"],
    )
    gate = op.create_table(
        "gate_state",
        sa.Column("id", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(gate, [{"id": 1, "epoch": 1}])


def downgrade() -> None:
    op.drop_table("gate_state")
    op.drop_table("reservation_lines")
    op.drop_table("reservations")
    op.drop_table("items")
    op.drop_table("products")
