"""Client of the users service's internal API: the cart (orders reads the cart it orders from,
and takes an order's lines out of it before answering), an account's facts, and the account
of an address (orders' admin list by buyer email)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from snapshoe.kernel.clients import InternalClient, UpstreamProblem, parse
from snapshoe.kernel.contracts.internal_users import AccountFacts, UserRef
from snapshoe.kernel.settings import Settings


class UsersClient(InternalClient):
    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(settings, "users", **kwargs)

    async def account(self, user_id: str) -> AccountFacts:
        """When the account was made (the waiting room's minimum age). Raises UpstreamProblem
        404 for an unknown account, UpstreamUnavailable when users cannot answer."""
        path = f"/internal/users/{quote(user_id, safe='')}/account"
        return parse(AccountFacts, await self.request("GET", path, retry=True), path)

    async def user_id_of_email(self, email: str) -> str | None:
        """The id of the account registered under ``email`` (users normalizes the address),
        None when there is none (or the address is malformed). Raises UpstreamUnavailable
        when users cannot answer."""
        path = "/internal/users"
        try:
            body = await self.request("GET", path, params={"email": email}, retry=True)
        except UpstreamProblem as exc:
            if exc.status == 404:
                return None
            raise
        return parse(UserRef, body, path).user_id

    async def get_cart(self, user_id: str) -> dict[str, Any]:
        """``{"lines": [{"item_id", "quantity"}, ...]}`` (an empty cart has no lines).
        Raises ``UpstreamUnavailable`` when the users service cannot answer."""
        return await self.request("GET", f"/internal/carts/{quote(user_id, safe='')}", retry=True)

    async def take_ordered_lines(self, user_id: str, order_placed: dict[str, Any]) -> None:
        """Apply an ``order.placed`` event (its message body) to the buyer's cart now.
        Idempotent by the event id, so it is retried like a GET."""
        await self.request(
            "POST",
            f"/internal/carts/{quote(user_id, safe='')}/orders",
            json=order_placed,
            retry=True,
        )
