"""buyer_holds: the ledger's own per-buyer limit counter; gate_state.run_id: the Redis the gate
was built on (docs/products.md, "The per-buyer limit in the ledger" and "Which Redis?")

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("gate_state", sa.Column("run_id", sa.String(64), nullable=True))
    op.create_table(
        "buyer_holds",
        sa.Column("product_id", sa.String(32), primary_key=True),
        sa.Column("buyer_id", sa.String(64), primary_key=True),
        sa.Column("units", sa.Integer, nullable=False),
        sa.Column("lim", sa.Integer, nullable=False, server_default="0"),
        sa.CheckConstraint("units >= 0", name=op.f("ck_buyer_holds_units_nonneg")),
        sa.CheckConstraint("lim = 0 OR units <= lim", name=op.f("ck_buyer_holds_within_limit")),
    )
    # What buyers hold today (ACTIVE + COMMITTED, any stock mode: a db_lock product's rows are
    # just never used). lim 0 until the next reservation of that buyer sets it.
    op.execute(
        "INSERT INTO buyer_holds (product_id, buyer_id, units, lim) "
        "SELECT l.product_id, r.buyer_id, SUM(l.quantity), 0 FROM reservations r "
        "JOIN reservation_lines l ON l.reservation_id = r.id "
        "WHERE r.state IN ('ACTIVE', 'COMMITTED') GROUP BY l.product_id, r.buyer_id"
    )


def downgrade() -> None:
    op.drop_table("buyer_holds")
    op.drop_column("gate_state", "run_id")
