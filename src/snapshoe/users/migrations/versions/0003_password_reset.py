"""Password reset codes, and an index for the expiry of accounts left unverified.

Revision ID: users_0003
Revises: users_0002
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.mysql import DATETIME

revision: str = "users_0003"
down_revision: str | Sequence[str] | None = "users_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "password_reset_codes",
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("salt", sa.String(32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("expires_at", DATETIME(fsp=6), nullable=False),
        sa.Column("created_at", DATETIME(fsp=6), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="fk_password_reset_codes_user_id_users",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name="pk_password_reset_codes"),
    )
    # The users worker looks for unverified accounts older than the TTL.
    op.create_index("ix_users_unverified", "users", ["email_verified", "created_at"])
    # Revoking every family of an account (reset, verification, promotion) by user id.
    op.create_index("ix_refresh_families_user_revoked", "refresh_families", ["user_id", "revoked"])


def downgrade() -> None:
    op.drop_index("ix_refresh_families_user_revoked", table_name="refresh_families")
    op.drop_index("ix_users_unverified", table_name="users")
    op.drop_table("password_reset_codes")
