"""draw_entries (product_id, state, charge_sent_at): the draw worker's look for charges to ask
for again runs every pass; without it each pass read every entry of the draw (50,000 in bench
draw) (docs/draws.md)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_draw_entries_product_id_state_charge_sent_at"),
        "draw_entries",
        ["product_id", "state", "charge_sent_at"],
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_draw_entries_product_id_state_charge_sent_at"), table_name="draw_entries"
    )
