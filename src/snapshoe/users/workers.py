"""Background loops of the users service: the cart's ``order.placed`` consumer and the inbox
retention prune.

``snapshoe worker users`` runs :func:`run` (``snapshoe up`` starts it).
"""

from __future__ import annotations

import asyncio

from snapshoe.kernel.db import create_engine, create_sessions
from snapshoe.kernel.messaging import consume, run_pruner
from snapshoe.kernel.settings import Settings
from snapshoe.users.consumers import CART_HANDLERS, CART_QUEUE, not_from_cart
from snapshoe.users.tables import inbox

# Each message is one short transaction; a few connections are plenty.
POOL_SIZE = 4


async def run(settings: Settings, stop: asyncio.Event) -> None:
    engine = create_engine(settings, "users", pool_size=POOL_SIZE)
    sessions = create_sessions(engine)
    try:
        await asyncio.gather(
            consume(
                settings,
                sessions,
                inbox,
                queue=CART_QUEUE,
                handlers=CART_HANDLERS,
                stop=stop,
                prefetch=POOL_SIZE * 2,
                ignore=not_from_cart,
            ),
            run_pruner(settings, sessions, stop, outbox=None, inbox=inbox),
        )
    finally:
        await engine.dispose()
