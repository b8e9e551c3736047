"""Background loops of the orders service: the outbox relay, the payment-event consumer and
the stock settler (commit/release intents carried out at products, retried until done).

Any number of worker processes may run: the relay claims rows with SKIP LOCKED, the consumer
shares a queue, and settling is idempotent at products and conditional here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from snapshoe.kernel.messaging import Relay
from snapshoe.kernel.settings import Settings
from snapshoe.orders import handlers
from snapshoe.orders.bootstrap import Deps, build_deps, close_deps
from snapshoe.orders.consumers import run_payment_consumer
from snapshoe.orders.tables import outbox

log = logging.getLogger("snapshoe.orders.worker")

SETTLE_POLL_SECONDS = 0.2
SETTLE_MAX_BACKOFF_SECONDS = 5.0


async def run_settler(deps: Deps, stop: asyncio.Event) -> None:
    delay = SETTLE_POLL_SECONDS
    while not stop.is_set():
        try:
            found, settled = await handlers.settle_stock(deps)
            # Back off while products cannot settle what is pending; poll fast otherwise.
            failing = found > settled
            delay = min(delay * 2, SETTLE_MAX_BACKOFF_SECONDS) if failing else SETTLE_POLL_SECONDS
            if found and not failing:
                continue
        except Exception:
            log.exception("stock settler failed")
            delay = min(delay * 2, SETTLE_MAX_BACKOFF_SECONDS)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    deps = build_deps(settings)
    try:
        await asyncio.gather(
            Relay(settings, deps.sessions, outbox).run(stop),
            run_payment_consumer(deps, stop),
            run_settler(deps, stop),
        )
    finally:
        await close_deps(deps)
