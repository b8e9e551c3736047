"""Billing payments (a draw's charge through a billing key): how a payment is charged
(``method``: 'confirm' or 'billing'), the billing key and the order name sent to the PG. A
billing payment's ``payment_key`` stays '' until the PG's answer tells it.

Revision ID: payments_0004
Revises: payments_0003
Create Date: 2026-12-10 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "payments_0004"
down_revision: str | Sequence[str] | None = "payments_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "payments",
        sa.Column("method", sa.String(16), server_default="confirm", nullable=False),
    )
    op.add_column("payments", sa.Column("billing_key", sa.String(200), nullable=True))
    op.add_column("payments", sa.Column("order_name", sa.String(100), nullable=True))


def downgrade() -> None:
    for column in ("order_name", "billing_key", "method"):
        op.drop_column("payments", column)
