"""The orders service's gauges read at scrape time: orders by status (from the database, so
every process answers the same) and its events' figures (kernel.deadletters.EventGauges)."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import Gauge
from sqlalchemy import func, select

from snapshoe.kernel.db import Sessions
from snapshoe.kernel.deadletters import EventGauges
from snapshoe.orders.domain import Status
from snapshoe.orders.tables import orders

ORDERS_BY_STATUS = Gauge(
    "snapshoe_orders",
    "Orders by status (read from the database at scrape time)",
    ["status"],
    multiprocess_mode="mostrecent",
)
# A GROUP BY on ix_orders_status_next_transition_at (an index scan): at most this often.
STATUS_TTL_SECONDS = 10.0


class OrdersGauges:
    def __init__(self, events: EventGauges, sessions: Callable[[], Sessions | None]) -> None:
        self.events = events
        self.sessions = sessions
        self._at = -float("inf")

    async def refresh(self) -> None:
        await self.events.refresh()
        sessions = self.sessions()
        if sessions is None or time.monotonic() - self._at < STATUS_TTL_SECONDS:
            return
        self._at = time.monotonic()
        async with sessions() as session:
            q = select(orders.c.status, func.count()).group_by(orders.c.status)
            counts = {str(status): int(n) for status, n in (await session.execute(q)).all()}
        for status in Status:
            ORDERS_BY_STATUS.labels(status.value).set(counts.get(status.value, 0))
