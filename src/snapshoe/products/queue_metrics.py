"""The waiting rooms' figures in the products service's ``/metrics``, read from the database
at scrape time (so every process answers the same), and this process's open streams."""

from __future__ import annotations

from prometheus_client import Gauge

from snapshoe.products import queue_repository as qrepo
from snapshoe.products.deps import Deps
from snapshoe.products.domain import TicketState

TICKETS = Gauge(
    "snapshoe_queue_tickets",
    "Tickets of the waiting rooms not yet ended, by product and state",
    ["product_id", "state"],
)
STREAMS = Gauge("snapshoe_queue_streams_open", "Live ticket streams (SSE) open in this process")


async def refresh(deps: Deps | None) -> None:
    if deps is None:
        return
    STREAMS.set(deps.queue_hub.open_streams)
    async with deps.sessions() as session:
        counts = await qrepo.open_queue_counts(session)
    TICKETS.clear()  # a queue that ended since the last scrape drops out
    for pid, by_state in counts.items():
        for state in TicketState:
            TICKETS.labels(pid, state.value).set(by_state.get(state.value, 0))
