"""Settings of the orders lifecycle worker (prefix ``SNAPSHOE_ORDERS_LIFECYCLE_``).

The durations themselves (``order_stage_seconds``, ``order_payment_ttl_seconds``, environment
``SNAPSHOE_ORDER_STAGE_SECONDS`` / ``SNAPSHOE_ORDER_PAYMENT_TTL_SECONDS``) are fields of the
kernel's ``Settings``, not of this class: orders' handlers read them as well as this worker.
No other service reads them (payments and the bench take an order's ``expires_at`` from it).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
