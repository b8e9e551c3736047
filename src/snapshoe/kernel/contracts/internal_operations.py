"""``GET /internal/operations`` of the services that publish events (products, payments): the
figures the orders service gathers into the operator's ``GET /api/admin/operations``.

Imports nothing of its own package (see ``kernel/contracts/__init__.py``)."""

from __future__ import annotations

from pydantic import BaseModel


class OutboxFigures(BaseModel):
    """Events written and not yet published, and how long the oldest has waited."""

    backlog: int
    oldest_age_seconds: float | None = None


class GateDrift(BaseModel):
    """Products' Redis stock gate against its ledger, read without the rebuild's lock: an
    admission on its way to the ledger may show as a momentary difference."""

    built: bool
    items: int  # items whose pairs left differ
    differences: int  # every difference: items, buyers' holds, a product's terms, the epoch


class ServiceOperations(BaseModel):
    service: str
    outbox: OutboxFigures
    gate_drift: GateDrift | None = None
