"""Client of the orders service's internal API (payments reads the order it charges for)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from snapshoe.kernel.clients import InternalClient, parse
from snapshoe.kernel.contracts.internal_orders import InternalOrder
from snapshoe.kernel.settings import Settings


class OrdersClient(InternalClient):
    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(settings, "orders", **kwargs)

    async def get_order(self, order_id: str) -> InternalOrder:
        """The order (``InternalOrder``: id, buyer, status, total, ``expires_at`` RFC 3339 UTC,
        payment id). An unknown id raises ``UpstreamProblem`` 404 ``not_found``; an outage
        raises ``UpstreamUnavailable``."""
        path = f"/internal/orders/{quote(order_id, safe='')}"
        return parse(InternalOrder, await self.request("GET", path, retry=True), path)
