"""Client of the products service's internal API (reservations and item details). Requests
and answers are the contract models of ``kernel.contracts.internal_products``."""

from __future__ import annotations

from typing import Any

import aiohttp

from snapshoe.kernel.clients import InternalClient, parse
from snapshoe.kernel.contracts.internal_operations import ServiceOperations
from snapshoe.kernel.contracts.internal_products import ItemDetails, ReservationOut, ReserveIn
from snapshoe.kernel.settings import Settings

RESERVE_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=1.0, sock_read=20.0)


class ProductsClient(InternalClient):
    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(settings, "products", **kwargs)

    async def reserve(self, request: ReserveIn) -> ReservationOut:
        """All-or-nothing, idempotent by ``reservation_id``. Raises UpstreamProblem with code
        sold_out / drop_not_open / purchase_limit_exceeded / not_found (and 403
        admission_required for a queue-mode product without its admission). The answer to a
        reservation just written carries each line's item details (``ReservedLine``).

        Not retried once sent: under a stampede a retry can race the first attempt still
        writing the same reservation (the drop benchmark caught the gate over-counting that
        way). Only a connection that was never made is tried again (the request never left).
        The caller releases what an unanswered attempt may have taken."""
        body = await self.request(
            "POST",
            "/internal/reservations",
            retry=False,
            # An admitted reserve may wait its turn for the ledger in a stampede: give it up
            # to 20 s (HAProxy's server timeout is 30 s) rather than fail it as an outage.
            timeout=RESERVE_TIMEOUT,
            json={
                "reservation_id": request.reservation_id,
                "buyer_id": request.buyer_id,
                "lines": [{"item_id": x.item_id, "quantity": x.quantity} for x in request.lines],
                "reserved_until": request.reserved_until.isoformat(),
                **({"admission_token": t} if (t := request.admission_token) else {}),
            },
        )
        return parse(ReservationOut, body, "POST /internal/reservations")

    async def commit(self, reservation_id: str) -> ReservationOut:
        path = f"/internal/reservations/{reservation_id}/commit"
        return parse(ReservationOut, await self.request("POST", path, retry=True), path)

    async def release(self, reservation_id: str) -> ReservationOut:
        path = f"/internal/reservations/{reservation_id}/release"
        return parse(ReservationOut, await self.request("POST", path, retry=True), path)

    async def get_reservation(self, reservation_id: str) -> ReservationOut:
        path = f"/internal/reservations/{reservation_id}"
        return parse(ReservationOut, await self.request("GET", path, retry=True), path)

    async def item_details(self, item_ids: list[str]) -> ItemDetails:
        """The items found (name, size, color, unit price, stock) and the ids ``missing``."""
        body = await self.request(
            "GET", "/internal/items", retry=True, params={"ids": ",".join(item_ids)}
        )
        return parse(ItemDetails, body, "GET /internal/items")

    async def operations(self) -> ServiceOperations:
        """Its outbox backlog (and, of products, the gate's drift): the operator's figures."""
        body = await self.request("GET", "/internal/operations", retry=False)
        return parse(ServiceOperations, body, "GET /internal/operations")
