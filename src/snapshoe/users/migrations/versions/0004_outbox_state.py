"""Outbox: why an event is still unpublished (``last_error``, e.g. 'unroutable') and when the
relay tries it again (``retry_at``); inbox: an index on ``processed_at`` for the retention prune.

As defined by snapshoe.kernel.messaging.messaging_tables (docs/events.md).

Revision ID: users_0004
Revises: users_0003
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "users_0004"
down_revision: str | Sequence[str] | None = "users_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("last_error", sa.String(200), nullable=True))
    op.add_column("outbox", sa.Column("retry_at", sa.DateTime(), nullable=True))
    op.create_index("ix_inbox_processed_at", "inbox", ["processed_at"])


def downgrade() -> None:
    op.drop_index("ix_inbox_processed_at", table_name="inbox")
    op.drop_column("outbox", "retry_at")
    op.drop_column("outbox", "last_error")
