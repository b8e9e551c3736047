"""Tables of the payments service database (``<namespace>_payments``).

``payments`` has UNIQUE(order_id): one confirm (or billing charge) attempt per order, ever. A
declined attempt fails the order (``PaymentFailed`` -> ``PAYMENT_FAILED``), so there is never a
second one to make, and two concurrent attempts for one order cannot both reach the PG: at most
one charge per order.

``refunds`` has UNIQUE(payment_id): one full refund per payment, however many events ask for it.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table

from snapshoe.kernel.db import ts_column
from snapshoe.kernel.messaging import messaging_tables

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)


payments = Table(
    "payments",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("order_id", String(64), nullable=False, unique=True),
    Column("buyer_id", String(32), nullable=False),
    # A billing payment's key is made by the PG with the charge: '' until its answer is known.
    Column("payment_key", String(200), nullable=False),
    Column("amount", BigInteger, nullable=False),
    # IN_PROGRESS -> DONE | ABORTED | UNKNOWN; UNKNOWN -> DONE | ABORTED; DONE -> CANCELED
    Column("status", String(16), nullable=False),
    Column("pg_code", String(64), nullable=True),
    Column("pg_message", String(255), nullable=True),
    ts_column("approved_at", nullable=True),
    ts_column("canceled_at", nullable=True),
    # Reconciler bookkeeping: how often the PG was asked, and when to ask next.
    Column("attempts", Integer, nullable=False, default=0),
    ts_column("next_check_at", nullable=True),
    ts_column("created_at"),
    ts_column("updated_at"),
    # Refunded at the PG so far (ours and the PG's own), and when the PG was last re-read for
    # refunds made there (the recheck of recent DONE payments).
    Column("refunded_amount", BigInteger, nullable=False, server_default="0"),
    ts_column("pg_checked_at", nullable=True),
    # The sweeper: when it saw the order paid by this payment (then never asks again), and
    # when it last asked orders.
    ts_column("fulfilled_at", nullable=True),
    ts_column("order_checked_at", nullable=True),
    # 'confirm' (the buyer's payment window, then POST /api/payments/confirm) or 'billing' (a
    # draw's charge through the buyer's billing key, with the order name sent to the PG).
    Column("method", String(16), nullable=False, server_default="confirm"),
    Column("billing_key", String(200), nullable=True),
    Column("order_name", String(100), nullable=True),
    Index("ix_payments_status_next_check_at", "status", "next_check_at"),
    Index("ix_payments_status_approved_at", "status", "approved_at"),
    Index("ix_payments_status_fulfilled_at", "status", "fulfilled_at"),
    Index("ix_payments_payment_key", "payment_key"),
    Index("ix_payments_buyer_id", "buyer_id"),
)

refunds = Table(
    "refunds",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("payment_id", String(32), nullable=False, unique=True),
    Column("order_id", String(64), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("reason", String(200), nullable=False),
    # PENDING -> DONE (the PG confirmed the cancel) | FAILED (the PG definitively refused)
    Column("status", String(16), nullable=False),
    Column("pg_code", String(64), nullable=True),
    Column("pg_message", String(255), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    ts_column("next_attempt_at"),
    ts_column("refunded_at", nullable=True),
    ts_column("created_at"),
    ts_column("updated_at"),
    Index("ix_refunds_status_next_attempt_at", "status", "next_attempt_at"),
)

# Each cancel the PG reports on one of our payments that we did not ask for (a dashboard
# refund, a chargeback, a partial cancel): PK (payment_id, transaction_key).
pg_cancels = Table(
    "pg_cancels",
    metadata,
    Column("payment_id", String(32), primary_key=True),
    Column("transaction_key", String(64), primary_key=True),
    Column("amount", BigInteger, nullable=False),
    Column("reason", String(200), nullable=False),
    ts_column("canceled_at"),
    ts_column("recorded_at"),
)

outbox, inbox = messaging_tables(metadata)
