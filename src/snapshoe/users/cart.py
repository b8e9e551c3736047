"""The cart: its lines in the users database, the item details from products."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from snapshoe.kernel.clients import UpstreamProblem, UpstreamUnavailable
from snapshoe.kernel.clock import utcnow
from snapshoe.kernel.contracts.orders import OrderPlaced
from snapshoe.kernel.errors import Problem, service_unavailable
from snapshoe.kernel.messaging import handle_once
from snapshoe.users import repository as repo
from snapshoe.users.domain import (
    CART_MAX_LINES,
    CartEntry,
    CartView,
    ItemInfo,
    bought_quantities,
    build_cart_view,
)
from snapshoe.users.tables import inbox

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from snapshoe.users.deps import Deps

log = logging.getLogger("snapshoe.users")


# Cart
#
# The one rule of the cart's calls to products: never while a database connection is held,
# and never failing the cart view. A products outage shows the cart "degraded"; only adding
# or changing a line, which needs products to say the item exists, is refused (503).


async def _item_details(deps: Deps, item_ids: list[str]) -> dict[str, ItemInfo] | None:
    """Products' view of the items, keyed by item id; None when products cannot answer."""
    try:
        body = await deps.products.item_details(item_ids)
        return {
            i.item_id: ItemInfo(
                item_id=i.item_id,
                product_id=i.product_id,
                product_name=i.product_name,
                size=i.size,
                color=i.color,
                unit_price=i.unit_price,
                available=i.available,
            )
            for i in body.items
        }
    except UpstreamUnavailable as exc:
        log.warning("products unreachable for the cart: %r", exc)
    except (UpstreamProblem, KeyError, TypeError, ValueError) as exc:
        # A 4xx or a malformed answer is a bug (or a wrong internal token), not the buyer's.
        log.error("products answered the cart with something unusable: %r", exc)
    return None


async def _entries(deps: Deps, user_id: str) -> list[CartEntry]:
    async with deps.sessions.begin() as session:
        return await repo.cart_entries(session, user_id)


async def _view(
    deps: Deps, entries: list[CartEntry], known: dict[str, ItemInfo | None] | None = None
) -> CartView:
    """The cart view of ``entries``. ``known``: products' answers already in hand (None =
    products does not know the item), so a command that just asked products does not ask
    again; only lines it did not ask about (a concurrent add) are fetched."""
    if not entries:
        return build_cart_view([], {})
    answers = dict(known or {})
    wanted = [e.item_id for e in entries if e.item_id not in answers]
    if wanted:
        fetched = await _item_details(deps, wanted)
        if fetched is None:
            return build_cart_view(entries, None)
        answers.update({i: fetched.get(i) for i in wanted})
    return build_cart_view(entries, {k: v for k, v in answers.items() if v is not None})


async def get_cart(deps: Deps, *, user_id: str) -> CartView:
    return await _view(deps, await _entries(deps, user_id))


def _unknown_item(item_id: str) -> Problem:
    return Problem(404, "not_found", detail=f"No item {item_id!r}")


async def set_cart_line(deps: Deps, *, user_id: str, item_id: str, quantity: int) -> CartView:
    """Put an item in the cart with this quantity (replacing the line's quantity).

    One products call checks the item and prices the lines already there, so a change costs
    what a view costs."""
    ids = list(dict.fromkeys([item_id, *(e.item_id for e in await _entries(deps, user_id))]))
    details = await _item_details(deps, ids)
    if details is None:
        raise service_unavailable(
            "The catalog cannot be reached to check the item; try again shortly", retry_after=2
        )
    # The database compares ids case-insensitively; store the id as products spells it.
    info = next((d for k, d in details.items() if k.lower() == item_id.lower()), None)
    if info is None:
        raise _unknown_item(item_id)
    known: dict[str, ItemInfo | None] = {i: details.get(i) for i in ids}
    known[info.item_id] = info
    now = utcnow()
    async with deps.sessions.begin() as session:
        # Changing a line already there is one conditional update: it needs no limit check,
        # so it takes no lock on the user (many changes of one cart don't queue on it).
        changed = await repo.update_cart_line(
            session, user_id=user_id, item_id=info.item_id, quantity=quantity, now=now
        )
        if not changed:
            # A new line: the user row lock makes "count, then insert" atomic per user, so
            # concurrent adds never pass the limit together.
            if not await repo.lock_user(session, user_id):
                raise Problem(404, "not_found", detail="No such user")
            full = await repo.cart_line_count(session, user_id) >= CART_MAX_LINES
            if full and not await repo.cart_has_line(session, user_id, info.item_id):
                raise Problem(
                    409,
                    "cart_full",
                    "Cart full",
                    f"A cart holds at most {CART_MAX_LINES} different items",
                    max_lines=CART_MAX_LINES,
                )
            # An upsert: a concurrent first add of the same item may have inserted it.
            await repo.put_cart_line(
                session, user_id=user_id, item_id=info.item_id, quantity=quantity, now=now
            )
        entries = await repo.cart_entries(session, user_id)
    return await _view(deps, entries, known)


async def remove_cart_line(deps: Deps, *, user_id: str, item_id: str) -> CartView:
    """Removing a line that is not in the cart is not an error (DELETE is idempotent)."""
    async with deps.sessions.begin() as session:
        await repo.lock_user(session, user_id)
        await repo.delete_cart_line(session, user_id, item_id)
        entries = await repo.cart_entries(session, user_id)
    return await _view(deps, entries)


async def clear_cart(deps: Deps, *, user_id: str) -> None:
    async with deps.sessions.begin() as session:
        await repo.lock_user(session, user_id)
        await repo.clear_cart(session, user_id)


async def cart_entries(deps: Deps, *, user_id: str) -> list[CartEntry]:
    """The raw lines, for the orders service (it prices and checks them with products)."""
    return await _entries(deps, user_id)


async def apply_order_placed(session: AsyncSession, event: OrderPlaced) -> None:
    """An order made from the cart takes what it bought out of the cart (domain.quantity_left).
    Runs in the consumer's inbox transaction, so a duplicate event changes nothing."""
    if not event.from_cart:
        return
    bought = bought_quantities([(line.item_id, line.quantity) for line in event.lines])
    if not bought:
        return
    if not await repo.lock_user(session, event.buyer_id):
        return
    now = utcnow()
    for item_id, quantity in sorted(bought.items()):
        await repo.take_from_cart_line(
            session, user_id=event.buyer_id, item_id=item_id, bought=quantity, now=now
        )


async def take_ordered_lines(deps: Deps, *, consumer: str, event: OrderPlaced) -> bool:
    """The ``order.placed`` effect on the cart, applied now for orders (which calls this
    before its 201, so the buyer's next cart read is without the bought lines). Recorded in
    the cart consumer's inbox under the event's id: the event, when it arrives, is then a
    duplicate, and a retry of this call too. False if it was applied already."""

    async def apply(session: AsyncSession, _: dict[str, Any]) -> None:
        await apply_order_placed(session, event)

    return await handle_once(deps.sessions, inbox, consumer, event.to_message(), apply)
