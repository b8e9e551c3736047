"""Draws at the reserve path: a draw-mode product's pair is reserved only for a drawn
entrant's order, under the order id the draw worker chose for that entrant (one pair of the
entry's size); any other reservation of it, such as ``POST /api/orders``, is 409
``not_on_sale``. docs/draws.md."""

from __future__ import annotations

from collections.abc import Sequence

from snapshoe.kernel.errors import Problem
from snapshoe.products import draw_repository as drepo
from snapshoe.products import schemas
from snapshoe.products.deps import Deps
from snapshoe.products.domain import Line
from snapshoe.products.queue_claims import products_sold_by


def not_on_sale() -> Problem:
    return Problem(
        409, "not_on_sale", detail="This product is sold by a draw: enter it instead of ordering"
    )


async def drawn_products(deps: Deps, pids: Sequence[str]) -> list[str]:
    """The products among ``pids`` sold by a draw."""
    return await products_sold_by(deps, pids, "draw")


async def check_claim(deps: Deps, body: schemas.ReserveIn, lines: Sequence[Line]) -> None:
    """The reservation is a drawn entrant's, for one pair of their size, or 409."""
    if len(lines) != 1 or lines[0].quantity != 1:
        raise not_on_sale()
    async with deps.sessions() as session:
        entry = await drepo.claim_of(session, body.reservation_id, body.buyer_id, lines[0].item_id)
    if entry is None:
        raise not_on_sale()
