"""Processes of the products service outside the app: the reservation sweeper loop, the
waiting rooms' outflow (queue_outflow.py), the draws (draw_worker.py) and the outbox relay of
their events, and ``snapshoe products reconcile``.

The orders service normally releases a reservation when its order expires or fails; the sweeper
is the safety net for reservations nobody released (a crashed caller, a lost message). It waits
a grace period past ``reserved_until`` so it never races the orders service's own expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from snapshoe.kernel.messaging import Relay, run_pruner
from snapshoe.kernel.settings import Settings
from snapshoe.products.bootstrap import open_deps
from snapshoe.products.deps import Deps
from snapshoe.products.draw_worker import run_draws
from snapshoe.products.queue_outflow import run_outflow
from snapshoe.products.rebuild import ReconcileReport, ensure_gate
from snapshoe.products.rebuild import reconcile as reconcile_gate
from snapshoe.products.reservations import sweep_expired
from snapshoe.products.tables import outbox

log = logging.getLogger("snapshoe.products.sweeper")

SWEEP_INTERVAL_SECONDS = 5.0
SWEEP_GRACE = timedelta(seconds=30)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    async with open_deps(settings) as deps:
        await asyncio.gather(
            sweep(deps, stop),
            run_outflow(deps, stop),
            run_draws(deps, stop),
            Relay(settings, deps.sessions, outbox).run(stop),
            run_pruner(settings, deps.sessions, stop, outbox=outbox, inbox=None),
        )


async def sweep(deps: Deps, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            # A flushed Redis is rebuilt even when no reservation arrives to notice it.
            await ensure_gate(deps)
            released = await sweep_expired(deps, grace=SWEEP_GRACE)
            if released:
                log.info("released expired reservations", extra={"released": released})
        except Exception:
            log.exception("sweeper pass failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SWEEP_INTERVAL_SECONDS)


async def reconcile(settings: Settings) -> ReconcileReport:
    """``snapshoe products reconcile``: compare the gate with the ledger, repair the gate when
    they differ (or it is closed), and report the differences."""
    async with open_deps(settings) as deps:
        return await reconcile_gate(deps)
