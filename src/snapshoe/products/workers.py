"""Background loops of the products service: the reservation sweeper.

The orders service normally releases a reservation when its order expires or fails; the sweeper
is the safety net for reservations nobody released (a crashed caller, a lost message). It waits
a grace period past ``reserved_until`` so it never races the orders service's own expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from snapshoe.kernel.settings import Settings
from snapshoe.products.bootstrap import open_deps
from snapshoe.products.handlers import ensure_gate, sweep_expired

log = logging.getLogger("snapshoe.products.sweeper")

SWEEP_INTERVAL_SECONDS = 5.0
SWEEP_GRACE = timedelta(seconds=30)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    async with open_deps(settings) as deps:
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
