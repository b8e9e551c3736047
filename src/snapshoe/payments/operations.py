"""The operator's figures of payments (``GET /internal/operations``, gathered by orders into
``GET /api/admin/operations``): its outbox backlog."""

from __future__ import annotations

from snapshoe.kernel.contracts.internal_operations import ServiceOperations
from snapshoe.kernel.outbox import backlog
from snapshoe.payments.deps import Deps
from snapshoe.payments.tables import outbox


async def operations(deps: Deps) -> ServiceOperations:
    return ServiceOperations(service="payments", outbox=await backlog(deps.sessions, outbox))
