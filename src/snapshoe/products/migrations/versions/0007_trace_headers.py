"""The outbox keeps the trace context and request id of the transaction that wrote each event
(``outbox.trace_headers``: traceparent, x-request-id); the relay publishes them as message
headers, so a consumer continues the trace (docs/operations.md, "Tracing").

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("trace_headers", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("outbox", "trace_headers")
