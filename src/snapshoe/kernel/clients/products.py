"""Client of the products service's internal API (reservations and item details)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import aiohttp

from snapshoe.kernel.clients import InternalClient
from snapshoe.kernel.settings import Settings

RESERVE_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=1.0, sock_read=20.0)


class ProductsClient(InternalClient):
    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(settings, "products", **kwargs)

    async def reserve(
        self,
        reservation_id: str,
        buyer_id: str,
        lines: list[dict[str, Any]],
        reserved_until: datetime,
    ) -> dict[str, Any]:
        """All-or-nothing, idempotent by ``reservation_id``. Raises UpstreamProblem with code
        sold_out / drop_not_open / purchase_limit_exceeded / not_found.

        Not retried once sent: under a stampede a retry can race the first attempt still
        writing the same reservation (the drop benchmark caught the gate over-counting that
        way). Only a connection that was never made is tried again (the request never left).
        The caller releases what an unanswered attempt may have taken."""
        return await self.request(
            "POST",
            "/internal/reservations",
            retry=False,
            # An admitted reserve may wait its turn for the ledger in a stampede: give it up
            # to 20 s (HAProxy's server timeout is 30 s) rather than fail it as an outage.
            timeout=RESERVE_TIMEOUT,
            json={
                "reservation_id": reservation_id,
                "buyer_id": buyer_id,
                "lines": lines,
                "reserved_until": reserved_until.isoformat(),
            },
        )

    async def commit(self, reservation_id: str) -> dict[str, Any]:
        return await self.request(
            "POST", f"/internal/reservations/{reservation_id}/commit", retry=True
        )

    async def release(self, reservation_id: str) -> dict[str, Any]:
        return await self.request(
            "POST", f"/internal/reservations/{reservation_id}/release", retry=True
        )

    async def get_reservation(self, reservation_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/internal/reservations/{reservation_id}", retry=True)

    async def item_details(self, item_ids: list[str]) -> dict[str, Any]:
        """``{"items": [...], "missing": [...]}`` with name, size, color, unit price, stock."""
        return await self.request(
            "GET", "/internal/items", retry=True, params={"ids": ",".join(item_ids)}
        )
