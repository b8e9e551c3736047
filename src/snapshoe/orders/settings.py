"""The orders service's own settings: ``OrdersSettings`` (same ``SNAPSHOE_`` names as ever: the
order's stage and payment durations, the sold-out hint, how much it sends to products and
writes at once) and the lifecycle worker's ``LifecycleSettings`` (prefix
``SNAPSHOE_ORDERS_LIFECYCLE_``). No other part reads them: payments and the bench take an
order's ``expires_at`` from the order. The shared ones are the kernel's ``Settings``.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from snapshoe.kernel.settings import Settings


class OrdersSettings(Settings):
    """The kernel's shared settings and the orders service's own knobs."""

    order_stage_seconds: float = 24 * 3600
    order_payment_ttl_seconds: float = 600
    # How long orders turns a sold-out item away without asking products again (0 = always ask).
    sold_out_hint_seconds: float = Field(default=0.5, ge=0, le=10)
    # Reservations one orders process has in flight at products at once; the rest of a
    # stampede waits in orders (cheap) and is re-checked against the sold-out hint when its
    # turn comes, instead of piling onto products until its answers time out.
    reserve_concurrency: int = Field(default=64, ge=1, le=1000)
    # Transactions one orders process has open at once to write new orders, each with every
    # order placed since its last (group commit).
    order_write_concurrency: int = Field(default=2, ge=1, le=64)


class LifecycleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SNAPSHOE_ORDERS_LIFECYCLE_", extra="ignore")

    # Orders claimed per transaction: one SELECT ... FOR UPDATE SKIP LOCKED, one UPDATE, one
    # INSERT ... SELECT each for history and outbox, whatever the size.
    batch_size: int = Field(default=1000, ge=1, le=20_000)
    # How often an idle worker looks for due orders (the lateness of a step is at most this).
    poll_seconds: float = Field(default=0.5, gt=0, le=60)
    # Claiming loops per process; each holds one DB connection while it works.
    concurrency: int = Field(default=1, ge=1, le=64)
    # Port of this process's Prometheus endpoint; 0 = none (the worker has no HTTP server).
    metrics_port: int = Field(default=0, ge=0, le=65535)
