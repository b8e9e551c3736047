"""The payments service's own settings (same ``SNAPSHOE_`` names as ever): where the PG is, how
long it may take, the re-check and the refund sweeper. The PG's secret key is shared (the
sandbox PG checks it), so it is in the kernel's ``Settings``."""

from __future__ import annotations

from pydantic import Field

from snapshoe.kernel.settings import Settings


class PaymentsSettings(Settings):
    """The kernel's shared settings and the payments service's own knobs."""

    pg_base_url: str = ""  # empty: the local sandbox PG
    pg_timeout_seconds: float = 5.0
    # Refunds made at the PG (dashboard, chargeback): besides the webhook, the payments worker
    # re-reads DONE payments approved within the last pg_recheck_days, pg_recheck_batch of
    # them (least recently read first) every pg_recheck_interval_seconds (0: off).
    pg_recheck_interval_seconds: float = Field(default=60.0, ge=0)
    pg_recheck_days: float = Field(default=7.0, gt=0)
    pg_recheck_batch: int = Field(default=100, ge=1, le=10_000)
    # The refund sweeper: every refund_sweep_interval_seconds (0: off) the payments worker asks
    # orders about DONE payments approved over refund_sweep_grace_seconds ago and not yet seen
    # paying their order, and refunds those whose order can no longer be fulfilled.
    refund_sweep_interval_seconds: float = Field(default=30.0, ge=0)
    refund_sweep_grace_seconds: float = Field(default=60.0, ge=0)
    refund_sweep_batch: int = Field(default=100, ge=1, le=10_000)

    @property
    def effective_pg_base_url(self) -> str:
        return self.pg_base_url or self.service_url("sandbox_pg")
