"""Client of the orders service's internal API (payments reads the order it charges for;
products places a drawn entrant's order)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from snapshoe.kernel.clients import InternalClient, parse
from snapshoe.kernel.contracts.internal_orders import DrawOrderIn, InternalOrder
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

    async def create_draw_order(self, order_id: str, buyer_id: str, item_id: str) -> InternalOrder:
        """Place a drawn entrant's order (one pair) under ``order_id``; idempotent by that id,
        so it is retried like a GET. A refusal (409 ``sold_out``...) raises UpstreamProblem."""
        body = DrawOrderIn(order_id=order_id, buyer_id=buyer_id, item_id=item_id)
        path = "/internal/draw-orders"
        answer = await self.request("POST", path, json=body.model_dump(), retry=True)
        return parse(InternalOrder, answer, path)
