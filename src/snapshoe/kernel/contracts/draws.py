"""Events the products service publishes about draws (routing key ``draw.<what>.v<version>``).

Imports nothing of its own package but the envelope (see ``kernel/contracts/__init__.py``)."""

from __future__ import annotations

from typing import ClassVar, Literal

from snapshoe.kernel.contracts.events import Event


class DrawEntryDecided(Event):
    """A draw's entry reached its result: ``won`` (charged; ``order_id`` is its order, now
    PREPARING), ``lost`` (not drawn before the pairs ran out) or ``payment_failed`` (drawn, the
    charge was declined; the pair went to the next entrant). Published once per entry, in the
    transaction that decided it; the users service mails the entrant."""

    TYPE: ClassVar[str] = "draw.entry_decided"
    entry_id: str
    product_id: str
    product_name: str
    buyer_id: str
    item_id: str
    size: int
    state: Literal["won", "lost", "payment_failed"]
    order_id: str | None = None
    # The revealed seed and its commitment, so the mail can say how to check the draw.
    seed: str
    commitment: str
