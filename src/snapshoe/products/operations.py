"""The operator's figures of products (``GET /internal/operations``, gathered by orders into
``GET /api/admin/operations``): its outbox backlog and the stock gate's drift from the ledger."""

from __future__ import annotations

from snapshoe.kernel.contracts.internal_operations import ServiceOperations
from snapshoe.kernel.outbox import backlog
from snapshoe.products.deps import Deps
from snapshoe.products.rebuild import drift
from snapshoe.products.tables import outbox


async def operations(deps: Deps) -> ServiceOperations:
    return ServiceOperations(
        service="products",
        outbox=await backlog(deps.sessions, outbox),
        gate_drift=await drift(deps),
    )
