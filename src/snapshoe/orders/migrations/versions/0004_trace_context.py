"""The outbox keeps the trace context and request id of the transaction that wrote each event
(``outbox.trace_headers``: traceparent, x-request-id); the relay publishes them as message
headers, so a consumer continues the trace (docs/operations.md, "Tracing").

Orders keep the traceparent of the request that placed them (``orders.trace_parent``), so the
lifecycle worker's spans link back to it.

Revision ID: orders_0004_trace
Revises: orders_0003_admin
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "orders_0004_trace"
down_revision: str | Sequence[str] | None = "orders_0003_admin"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("trace_headers", sa.JSON(), nullable=True))
    op.add_column("orders", sa.Column("trace_parent", sa.String(55), nullable=True))


def downgrade() -> None:
    op.drop_column("orders", "trace_parent")
    op.drop_column("outbox", "trace_headers")
