"""Long garbage-collector pauses, logged: a process holding a crowd of connections (the waiting
room's streams) has millions of objects, and a full collection stops its event loop and every
thread for as long as it takes. A pause over LONG_PAUSE_SECONDS is a warning with its
generation and duration, so an operator (and a benchmark) can tell a stall from a hang."""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

log = logging.getLogger("snapshoe.gc")

LONG_PAUSE_SECONDS = 0.2
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
    if _watch not in gc.callbacks:
        gc.callbacks.append(_watch)
