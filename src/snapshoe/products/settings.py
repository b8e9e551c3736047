"""The products service's own settings (same ``SNAPSHOE_`` names as ever): its ledger writers
and how often it checks the stock gate's Redis. The shared ones are the kernel's ``Settings``."""

from __future__ import annotations

from pydantic import Field

from snapshoe.kernel.settings import Settings


class ProductsSettings(Settings):
    """The kernel's shared settings and the products service's own knobs."""

    # Ledger transactions one products process has open at once. Each writes every admitted
    # reservation queued since the last one (group commit); sold-out refusals (the gate alone)
    # never wait for them.
    ledger_write_concurrency: int = Field(default=2, ge=1, le=64)
    # How often each products process reads the Redis run id (INFO server) to notice a Redis
    # that is not the one the stock gate was built on (a restart from a snapshot, a failover);
    # new connections are checked as they open. docs/products.md, "Which Redis?".
    gate_check_seconds: float = Field(default=1.0, gt=0, le=60)
