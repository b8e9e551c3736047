"""Client of the orders service's internal API (payments reads the order it charges for)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from snapshoe.kernel.clients import InternalClient
from snapshoe.kernel.settings import Settings


class OrdersClient(InternalClient):
    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(settings, "orders", **kwargs)

    async def get_order(self, order_id: str) -> dict[str, Any]:
        """``{id, buyer_id, status, total_amount, expires_at}`` (``expires_at`` RFC 3339 UTC).
        An unknown id raises ``UpstreamProblem`` 404 ``not_found``; an outage raises
        ``UpstreamUnavailable``."""
        return await self.request("GET", f"/internal/orders/{quote(order_id, safe='')}", retry=True)
