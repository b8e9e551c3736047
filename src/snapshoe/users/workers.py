"""Background loops of the users service: the cart's ``order.placed`` consumer.

``snapshoe worker users`` runs :func:`run` (``snapshoe up`` starts it).
"""

from __future__ import annotations

import asyncio

from snapshoe.kernel.db import create_engine, create_sessions
from snapshoe.kernel.messaging import consume
from snapshoe.kernel.settings import Settings
from snapshoe.users.consumers import CART_HANDLERS, CART_QUEUE, not_from_cart
from snapshoe.users.tables import inbox

# Each message is one short transaction; a few connections are plenty.
POOL_SIZE = 4


async def run(settings: Settings, stop: asyncio.Event) -> None:
    engine = create_engine(settings, "users", pool_size=POOL_SIZE)
    try:
        await consume(
            settings,
            create_sessions(engine),
            inbox,
            queue=CART_QUEUE,
            handlers=CART_HANDLERS,
            stop=stop,
            prefetch=POOL_SIZE * 2,
            ignore=not_from_cart,
        )
    finally:
        await engine.dispose()
