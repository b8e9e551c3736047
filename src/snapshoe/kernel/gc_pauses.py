"""Garbage-collector pauses: kept rare, and the long ones logged.

A process holding a crowd of connections (the waiting room's streams) has millions of objects,
and a full collection stops its event loop for as long as it takes to traverse them all: in
bench queue a products process holding ~8,000 streams paused 1.5 s every 5-10 s with CPython's
default thresholds (700, 10, 10), since the objects of requests in flight at each young
collection are promoted and soon make up the quarter of the old generation that lets a full
collection run. THRESHOLDS makes young collections 70 times rarer (fewer promotions) and full
ones rarer still; garbage without cycles is freed by reference counting either way, and cycles
mostly die young. A pause over LONG_PAUSE_SECONDS is a warning with its generation, so an
operator (and a benchmark) can tell a stall from a hang."""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

log = logging.getLogger("snapshoe.gc")

LONG_PAUSE_SECONDS = 0.2
THRESHOLDS = (50_000, 20, 100)
_started: list[float] = []


def _watch(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[:] = [time.perf_counter()]
    elif _started:
        took = time.perf_counter() - _started.pop()
        if took >= LONG_PAUSE_SECONDS:
            log.warning(
                "garbage collection paused this process %.2f s (generation %d, %d collected)",
                took,
                info.get("generation", -1),
                info.get("collected", 0),
            )


def install() -> None:
    """Once per process (idempotent)."""
    gc.set_threshold(*THRESHOLDS)
    if _watch not in gc.callbacks:
        gc.callbacks.append(_watch)
