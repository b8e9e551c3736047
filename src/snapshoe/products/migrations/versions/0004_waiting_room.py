"""The waiting room: products.sale_mode, queue_opens_at, admission_seconds; the queues and
queue_tickets tables (docs/waiting-room.md)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from snapshoe.kernel.db import UtcDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "products", sa.Column("sale_mode", sa.String(8), nullable=False, server_default="fcfs")
    )
    op.add_column("products", sa.Column("queue_opens_at", UtcDateTime(), nullable=True))
    op.add_column("products", sa.Column("admission_seconds", sa.Integer, nullable=True))
    op.create_check_constraint(
        op.f("ck_products_sale_mode"), "products", "sale_mode IN ('fcfs', 'queue')"
    )
    op.create_table(
        "queues",
        sa.Column("product_id", sa.String(32), sa.ForeignKey("products.id"), primary_key=True),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("next_place", sa.BigInteger, nullable=False),
        sa.Column("head", sa.BigInteger, nullable=False),
        sa.Column("released_at", UtcDateTime(), nullable=True),
        sa.Column("ended_at", UtcDateTime(), nullable=True),
        sa.CheckConstraint("state IN ('pre', 'running', 'ended')", name=op.f("ck_queues_state")),
        sa.CheckConstraint("head >= 0 AND next_place > head", name=op.f("ck_queues_places")),
    )
    op.create_table(
        "queue_tickets",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("product_id", sa.String(32), sa.ForeignKey("products.id"), nullable=False),
        sa.Column("buyer_id", sa.String(64), nullable=False),
        sa.Column("lottery", sa.BigInteger, nullable=True),
        sa.Column("place", sa.BigInteger, nullable=True),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("joined_at", UtcDateTime(), nullable=False),
        sa.Column("admitted_at", UtcDateTime(), nullable=True),
        sa.Column("admitted_until", UtcDateTime(), nullable=True),
        sa.Column("ended_at", UtcDateTime(), nullable=True),
        sa.Column("order_id", sa.String(64), nullable=True),
        sa.CheckConstraint(
            "state IN ('waiting', 'admitted', 'used', 'expired', 'sold_out')",
            name=op.f("ck_queue_tickets_state"),
        ),
        sa.UniqueConstraint(
            "product_id", "buyer_id", name=op.f("uq_queue_tickets_product_id_buyer_id")
        ),
        sa.UniqueConstraint("product_id", "place", name=op.f("uq_queue_tickets_product_id_place")),
    )
    op.create_index(
        op.f("ix_queue_tickets_product_id_state_place"),
        "queue_tickets",
        ["product_id", "state", "place"],
    )


def downgrade() -> None:
    op.drop_table("queue_tickets")
    op.drop_table("queues")
    op.drop_constraint(op.f("ck_products_sale_mode"), "products", type_="check")
    op.drop_column("products", "admission_seconds")
    op.drop_column("products", "queue_opens_at")
    op.drop_column("products", "sale_mode")
