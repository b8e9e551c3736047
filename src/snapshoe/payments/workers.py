"""Background work of the payments service (``snapshoe worker payments``): the outbox relay,
the refund consumer, the reconciler (unknown payments, pending refunds), the recheck of recent
DONE payments for refunds made at the PG, the sweeper that refunds charges whose order can no
longer be fulfilled, and the outbox/inbox retention prune."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from snapshoe.kernel.clients.orders import OrdersClient
from snapshoe.kernel.messaging import Relay, run_pruner
from snapshoe.kernel.settings import Settings, settings_for
from snapshoe.payments import handlers, recheck, refunds, sweep
from snapshoe.payments.bootstrap import build_core, close_core
from snapshoe.payments.consumers import run_refund_consumer
from snapshoe.payments.deps import Core, Orders
from snapshoe.payments.settings import PaymentsSettings
from snapshoe.payments.tables import inbox, outbox

log = logging.getLogger("snapshoe.payments.workers")

POLL_SECONDS = 0.5


async def reconcile_forever(core: Core, stop: asyncio.Event, poll: float = POLL_SECONDS) -> None:
    """Any number of these may run: each payment and refund is claimed by a conditional update."""
    while not stop.is_set():
        busy = 0
        try:
            busy += await handlers.reconcile_due(core)
            busy += await refunds.refunds_due(core)
        except Exception:
            log.exception("reconciler pass failed")
        if not busy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll)


async def every(
    seconds: float, name: str, step: Callable[[], Awaitable[int]], stop: asyncio.Event
) -> None:
    """Run ``step`` every ``seconds`` until ``stop`` (0: never). Any number of workers may run
    each step at once: what they change is claimed by conditional writes."""
    if seconds <= 0:
        return
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        if stop.is_set():
            return
        try:
            await step()
        except Exception:
            log.exception("%s pass failed", name)


async def run(shared: Settings, stop: asyncio.Event, orders: Orders | None = None) -> None:
    """``orders``: how the sweeper reads orders (default: the internal API; tests fake it)."""
    settings = settings_for(PaymentsSettings, shared)
    core = build_core(settings, pool_size=5)
    client = orders or OrdersClient(settings)
    try:
        await asyncio.gather(
            Relay(settings, core.sessions, outbox).run(stop),
            run_refund_consumer(settings, core, stop),
            reconcile_forever(core, stop),
            run_pruner(settings, core.sessions, stop, outbox=outbox, inbox=inbox),
            every(
                settings.pg_recheck_interval_seconds,
                "PG recheck",
                lambda: recheck.recheck_recent(core),
                stop,
            ),
            every(
                settings.refund_sweep_interval_seconds,
                "refund sweeper",
                lambda: sweep.sweep(core, client),
                stop,
            ),
        )
    finally:
        if orders is None:
            await client.aclose()
        await close_core(core)
