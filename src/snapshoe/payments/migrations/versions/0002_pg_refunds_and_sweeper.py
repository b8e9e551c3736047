"""Refunds made at the PG (recorded per PG cancel) and the sweeper's bookkeeping.

Revision ID: payments_0002
Revises: payments_0001
Create Date: 2026-12-02 09:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.mysql import DATETIME

revision: str = "payments_0002"
down_revision: str | Sequence[str] | None = "payments_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Refunded at the PG so far (ours and the PG's own), and when the PG was last re-read.
    op.add_column(
        "payments",
        sa.Column("refunded_amount", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.add_column("payments", sa.Column("pg_checked_at", DATETIME(fsp=6), nullable=True))
    # The sweeper: when it saw the order paid by this payment (never asked again), and when it
    # last asked orders.
    op.add_column("payments", sa.Column("fulfilled_at", DATETIME(fsp=6), nullable=True))
    op.add_column("payments", sa.Column("order_checked_at", DATETIME(fsp=6), nullable=True))
    op.create_index("ix_payments_status_approved_at", "payments", ["status", "approved_at"])
    op.create_index("ix_payments_status_fulfilled_at", "payments", ["status", "fulfilled_at"])
    op.create_table(
        "pg_cancels",
        sa.Column("payment_id", sa.String(32), nullable=False),
        sa.Column("transaction_key", sa.String(64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("canceled_at", DATETIME(fsp=6), nullable=False),
        sa.Column("recorded_at", DATETIME(fsp=6), nullable=False),
        # One row per PG cancel, however many re-readers see it.
        sa.PrimaryKeyConstraint("payment_id", "transaction_key", name="pk_pg_cancels"),
    )


def downgrade() -> None:
    op.drop_table("pg_cancels")
    op.drop_index("ix_payments_status_fulfilled_at", "payments")
    op.drop_index("ix_payments_status_approved_at", "payments")
    for column in ("order_checked_at", "fulfilled_at", "pg_checked_at", "refunded_amount"):
        op.drop_column("payments", column)
