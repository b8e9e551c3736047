"""Background work of the payments service (``snapshoe worker payments``): the outbox relay,
the refund consumer, the reconciler (unknown payments, pending refunds) and the outbox/inbox
retention prune."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from snapshoe.kernel.messaging import Relay, run_pruner
from snapshoe.kernel.settings import Settings
from snapshoe.payments import handlers
from snapshoe.payments.bootstrap import Core, build_core, close_core
from snapshoe.payments.consumers import run_refund_consumer
from snapshoe.payments.tables import inbox, outbox

log = logging.getLogger("snapshoe.payments.workers")

POLL_SECONDS = 0.5


async def reconcile_forever(core: Core, stop: asyncio.Event, poll: float = POLL_SECONDS) -> None:
    """Any number of these may run: each payment and refund is claimed by a conditional update."""
    while not stop.is_set():
        busy = 0
        try:
            busy += await handlers.reconcile_due(core)
            busy += await handlers.refunds_due(core)
        except Exception:
            log.exception("reconciler pass failed")
        if not busy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    core = build_core(settings, pool_size=5)
    try:
        await asyncio.gather(
            Relay(settings, core.sessions, outbox).run(stop),
            run_refund_consumer(settings, core, stop),
            reconcile_forever(core, stop),
            run_pruner(settings, core.sessions, stop, outbox=outbox, inbox=inbox),
        )
    finally:
        await close_core(core)
