"""Background loops of the users service: the cart's ``order.placed`` consumer and the
account mail queue (users.mail.drain: the mail signup and resend queue).

``snapshoe worker users`` runs :func:`run` (``snapshoe up`` starts it).
"""

from __future__ import annotations

import asyncio
from typing import Any

from snapshoe.kernel.db import create_engine, create_sessions
from snapshoe.kernel.messaging import consume
from snapshoe.kernel.settings import Settings
from snapshoe.users import handlers
from snapshoe.users.bootstrap import build_deps, close_deps
from snapshoe.users.consumers import CART_HANDLERS, CART_QUEUE, not_from_cart
from snapshoe.users.mail import drain
from snapshoe.users.tables import inbox

# Each message is one short transaction; a few connections are plenty.
POOL_SIZE = 4


async def run(settings: Settings, stop: asyncio.Event) -> None:
    engine = create_engine(settings, "users", pool_size=POOL_SIZE)
    deps = await build_deps(settings)  # the mail jobs' handlers need what requests have

    async def mail_job(job: dict[str, Any]) -> bool:
        return await handlers.run_mail_job(deps, job)

    try:
        await asyncio.gather(
            consume(
                settings,
                create_sessions(engine),
                inbox,
                queue=CART_QUEUE,
                handlers=CART_HANDLERS,
                stop=stop,
                prefetch=POOL_SIZE * 2,
                ignore=not_from_cart,
            ),
            drain(settings, deps.redis, mail_job, stop),
        )
    finally:
        await close_deps(deps)
        await engine.dispose()
