"""Integration events exchanged between services, versioned.

An event type never changes meaning: a breaking change is a new ``version`` published beside the
old one until every consumer has moved. Consumers ignore fields they don't know.

``MUST_ROUTE``: an event some service acts on (a payment, a cancellation, a refund) must reach a
queue; the relay publishes it ``mandatory`` and keeps it unpublished when the broker has no
queue for it. An announcement nobody needs today (``order.shipped``...) sets it False: with no
queue bound it is dropped by the broker, as designed.
"""

from __future__ import annotations

from snapshoe.kernel.contracts.events import Event
from snapshoe.kernel.contracts.routing import must_route

__all__ = ["Event", "must_route"]
