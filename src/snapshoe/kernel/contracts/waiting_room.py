"""Events the products service publishes about its waiting rooms (routing key
``queue.<what>.v<version>``).

Imports nothing of its own package but the envelope (see ``kernel/contracts/__init__.py``)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from snapshoe.kernel.contracts.events import Event


class QueueAdmitted(Event):
    """A waiting buyer's ticket was admitted: the buyer may order ``product_id`` until
    ``admitted_until``. Published once per ticket, in the outflow step's transaction that
    admitted it; the users service mails the buyer (who may have closed the page)."""

    TYPE: ClassVar[str] = "queue.admitted"
    ticket_id: str
    product_id: str
    product_name: str = ""
    buyer_id: str
    admitted_until: datetime
