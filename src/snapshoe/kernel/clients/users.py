"""Client of the users service's internal cart API (orders reads the cart it orders from)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from snapshoe.kernel.clients import InternalClient
from snapshoe.kernel.settings import Settings


class UsersClient(InternalClient):
    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(settings, "users", **kwargs)

    async def get_cart(self, user_id: str) -> dict[str, Any]:
        """``{"lines": [{"item_id", "quantity"}, ...]}`` (an empty cart has no lines).
        Raises ``UpstreamUnavailable`` when the users service cannot answer."""
        return await self.request("GET", f"/internal/carts/{quote(user_id, safe='')}", retry=True)
