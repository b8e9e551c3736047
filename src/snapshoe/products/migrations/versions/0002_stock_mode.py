"""products.stock_mode: 'gate' (Redis gate + ledger) or 'db_lock' (row locks only, a benchmark
baseline)

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "products",
        sa.Column("stock_mode", sa.String(8), nullable=False, server_default="gate"),
    )
    op.create_check_constraint(
        op.f("ck_products_stock_mode"), "products", "stock_mode IN ('gate', 'db_lock')"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_products_stock_mode"), "products", type_="check")
    op.drop_column("products", "stock_mode")
