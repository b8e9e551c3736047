"""Before a stampede: does the gateway keep as many connections from this address as wrk opens?

wrk drives a drop from one address, and the gateway resets connections from one address beyond
``SNAPSHOE_GATEWAY_MAX_CONNECTIONS_PER_CLIENT`` (a flood defence, default 300). The bench cannot
read the running platform's settings, so it asks the gateway itself: it opens the connections,
waits a moment and counts those still open. Without this a 1,000-connection drop against a
default platform spends its time reconnecting and reports a few hundred answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

SETTLE_SECONDS = 0.5  # HAProxy resets at accept; a refused socket is closed well within this


async def _is_open(reader: asyncio.StreamReader) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(1), timeout=0.01)
    except TimeoutError:
        return True  # silent: held open, waiting for a request
    except OSError:
        return False
    return data != b""


async def connections_kept(url: str, count: int, settle: float = SETTLE_SECONDS) -> int:
    """How many of ``count`` idle connections to the gateway at ``url`` it keeps open."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(count):
            try:
                opened.append(await asyncio.open_connection(host, port))
            except OSError:
                continue  # refused at connect: not kept
        await asyncio.sleep(settle)
        return sum([await _is_open(reader) for reader, _ in opened])
    finally:
        for _, writer in opened:
            writer.close()
        for _, writer in opened:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def cap_problem(url: str, kept: int, wanted: int) -> str | None:
    """Why the stampede cannot run as asked, if the gateway keeps fewer than ``wanted``."""
    if kept >= wanted:
        return None
    return (
        f"the gateway at {url} keeps only {kept} of {wanted} connections from this address "
        "open (its per-address cap, SNAPSHOE_GATEWAY_MAX_CONNECTIONS_PER_CLIENT, default 300): "
        f"start the platform with SNAPSHOE_GATEWAY_MAX_CONNECTIONS_PER_CLIENT={wanted} or more "
        "for this run, or ask for fewer connections (-c)"
    )


__all__ = ["cap_problem", "connections_kept"]
