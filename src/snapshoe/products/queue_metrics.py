"""The products service's gauges read at scrape time: the waiting rooms' figures and the gate's
drift from the ledger (from the database and Redis, so every process answers the same), and
this process's open streams; plus its outbox figures (kernel.deadletters.EventGauges)."""

from __future__ import annotations

import time

from prometheus_client import Gauge

from snapshoe.kernel.deadletters import EventGauges
from snapshoe.products import queue_repository as qrepo
from snapshoe.products.deps import Deps
from snapshoe.products.domain import TicketState
from snapshoe.products.rebuild import drift

TICKETS = Gauge(
    "snapshoe_queue_tickets",
    "Tickets of the waiting rooms not yet ended, by product and state",
    ["product_id", "state"],
    multiprocess_mode="mostrecent",
)
STREAMS = Gauge(
    "snapshoe_queue_streams_open",
    "Live ticket streams (SSE) open (summed over the live processes)",
    multiprocess_mode="livesum",
)
GATE_DRIFT = Gauge(
    "snapshoe_gate_drift_differences",
    "Differences between the Redis stock gate and the ledger seen in two readings 0.25 s apart"
    " (items: pairs left differ; all: also holds, terms, epoch); -1: no gate built",
    ["kind"],
    multiprocess_mode="mostrecent",
)
# Drift reads the whole catalog twice: at most this often, whatever the scrape interval.
DRIFT_TTL_SECONDS = 30.0


class ProductsGauges:
    def __init__(self, events: EventGauges) -> None:
        self.events = events
        self._labels: set[tuple[str, str]] = set()
        self._drift_at = -float("inf")

    async def refresh(self, deps: Deps | None) -> None:
        if deps is None:
            return
        STREAMS.set(deps.queue_hub.open_streams)
        await self.events.refresh()
        async with deps.sessions() as session:
            counts = await qrepo.open_queue_counts(session)
        seen = {(pid, s.value) for pid in counts for s in TicketState}
        # A queue that ended since the last scrape goes to 0 (in multiprocess mode a label
        # cannot be removed from the other processes' files).
        for pid, state in self._labels - seen:
            TICKETS.labels(pid, state).set(0)
        self._labels |= seen
        for pid, by_state in counts.items():
            for state in TicketState:
                TICKETS.labels(pid, state.value).set(by_state.get(state.value, 0))
        if time.monotonic() - self._drift_at >= DRIFT_TTL_SECONDS:
            self._drift_at = time.monotonic()
            found = await drift(deps)
            GATE_DRIFT.labels("items").set(found.items if found.built else -1)
            GATE_DRIFT.labels("all").set(found.differences if found.built else -1)
