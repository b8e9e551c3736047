"""The account's language (``users.lang``, 'ko' or 'en'): the language of its mail. Existing
accounts get 'ko', the store's default.

Revision ID: users_0005
Revises: users_0004
Create Date: 2026-12-20 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "users_0005"
down_revision: str | Sequence[str] | None = "users_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("lang", sa.String(2), nullable=False, server_default="ko"))


def downgrade() -> None:
    op.drop_column("users", "lang")
