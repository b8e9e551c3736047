"""Draws: products.entry_opens_at, entry_closes_at, draw_at and sale mode 'draw'; the draws and
draw_entries tables (docs/draws.md); the messaging outbox (a draw's results are events)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from snapshoe.kernel.db import UtcDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("products", sa.Column("entry_opens_at", UtcDateTime(), nullable=True))
    op.add_column("products", sa.Column("entry_closes_at", UtcDateTime(), nullable=True))
    op.add_column("products", sa.Column("draw_at", UtcDateTime(), nullable=True))
    op.drop_constraint(op.f("ck_products_sale_mode"), "products", type_="check")
    op.create_check_constraint(
        op.f("ck_products_sale_mode"), "products", "sale_mode IN ('fcfs', 'queue', 'draw')"
    )
    op.create_table(
        "draws",
        sa.Column("product_id", sa.String(32), sa.ForeignKey("products.id"), primary_key=True),
        sa.Column("seed", sa.String(64), nullable=False),
        sa.Column("commitment", sa.String(64), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("drawn_at", UtcDateTime(), nullable=True),
        sa.Column("settled_at", UtcDateTime(), nullable=True),
        sa.CheckConstraint("state IN ('open', 'drawn', 'settled')", name=op.f("ck_draws_state")),
    )
    op.create_table(
        "draw_entries",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("product_id", sa.String(32), sa.ForeignKey("products.id"), nullable=False),
        sa.Column("item_id", sa.String(32), sa.ForeignKey("items.id"), nullable=False),
        sa.Column("buyer_id", sa.String(64), nullable=False),
        sa.Column("billing_key", sa.String(200), nullable=False),
        sa.Column("card_number", sa.String(32), nullable=False),
        sa.Column("card_fingerprint", sa.String(64), nullable=False),
        sa.Column("card_active", sa.String(64), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("rank", sa.BigInteger, nullable=True),
        sa.Column("order_id", sa.String(64), nullable=True),
        sa.Column("charge_sent_at", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("decided_at", UtcDateTime(), nullable=True),
        sa.CheckConstraint(
            "state IN ('entered', 'withdrawn', 'charging', 'won', 'lost', 'payment_failed')",
            name=op.f("ck_draw_entries_state"),
        ),
        sa.UniqueConstraint("order_id", name=op.f("uq_draw_entries_order_id")),
        sa.UniqueConstraint(
            "product_id", "buyer_id", name=op.f("uq_draw_entries_product_id_buyer_id")
        ),
        sa.UniqueConstraint(
            "product_id", "card_active", name=op.f("uq_draw_entries_product_id_card_active")
        ),
    )
    op.create_index(
        op.f("ix_draw_entries_product_id_item_id_state_rank"),
        "draw_entries",
        ["product_id", "item_id", "state", "rank"],
    )

    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("routing_key", sa.String(120), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("published_at", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.Column("retry_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("event_id", name="uq_outbox_event_id"),
    )
    op.create_index("ix_outbox_unpublished", "outbox", ["published_at", "id"])
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(120), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("processed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id", name="pk_inbox"),
    )
    op.create_index("ix_inbox_processed_at", "inbox", ["processed_at"])


def downgrade() -> None:
    op.drop_table("inbox")
    op.drop_index("ix_outbox_unpublished", table_name="outbox")
    op.drop_table("outbox")
    op.drop_table("draw_entries")
    op.drop_table("draws")
    op.drop_constraint(op.f("ck_products_sale_mode"), "products", type_="check")
    op.create_check_constraint(
        op.f("ck_products_sale_mode"), "products", "sale_mode IN ('fcfs', 'queue')"
    )
    op.drop_column("products", "draw_at")
    op.drop_column("products", "entry_closes_at")
    op.drop_column("products", "entry_opens_at")
